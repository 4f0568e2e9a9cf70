/*
 * Websocket load generator for the chatroom wire protocol.
 *
 * Opens one websocket per token read from --tokens and waits until every client
 * has received its first frame (the user object) and no frame has arrived for
 * --settle-ms. Then it posts: in burst mode each client sends --messages bodies
 * at once, and in steady mode the clients take turns sending --rate messages per
 * second in total for --duration seconds. The run passes only if every client
 * received every posted message exactly once, in increasing id order, with the
 * same id for the same message at every client.
 *
 * Each body is "c<client>-m<seq>", so the receiver finds the send time of the
 * message it got. Progress and the result are JSON lines on stdout, and
 * diagnostics go to stderr. The exit status is 0 only when every check passed.
 *
 * Build: gcc -O2 -Wall -Wextra -o loadgen loadgen.c
 * Linux only (epoll); no third-party libraries.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TOKEN_LEN 256
#define READ_CHUNK (256 * 1024)
#define HIST_BUCKETS 4096
#define MAX_EVENTS 1024
#define MAX_REPORTED_PROBLEMS 10
#define STDIN_TAG UINT64_MAX

enum conn_state { ST_IDLE, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSED };

struct conn {
    int fd;
    enum conn_state state;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_off, out_len, out_cap;
    char *frag; /* payload of a fragmented message being reassembled */
    size_t frag_len, frag_cap;
    int frag_opcode;
    bool joined;
    bool presence;
    int64_t connect_start_ns;
    int64_t last_id;
    uint64_t seq_hash;
    uint64_t received; /* distinct expected messages received */
    uint64_t duplicates;
    uint64_t out_of_order;
    int close_code;
    char close_reason[96];
    char failure[160];
};

/* Log-linear histogram of microsecond values, 64 sub-buckets per power of two (about 1.6 % resolution). */
struct histogram {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
    double sum;
};

static struct {
    const char *host;
    int port;
    const char *tokens_path;
    long messages;
    double rate;
    double duration;
    bool wait_go;
    long settle_ms;
    long connect_concurrency;
    double timeout_s;
    double join_timeout_s;
    long body_pad;
} opt = {"127.0.0.1", 0, NULL, 1, 0.0, 0.0, false, 500, 100, 60.0, 300.0, 0};

static char **tokens;
static long nclients;
static struct conn *conns;
static int epfd;
static struct sockaddr_in server_addr;

static long per_client_slots;  /* message slots per client: index = client * per_client_slots + seq */
static long total_slots;
static long messages_planned;  /* messages the run will post */
static long messages_sent;
static int64_t *send_time_ns;  /* per slot, 0 = not sent */
static int64_t *slot_id;       /* per slot, -1 = not seen yet */
static uint8_t *received_bits; /* nclients * total_slots bits */
static struct histogram latency;
static struct histogram join_latency; /* microseconds from connect() to the first frame */
static uint8_t *joined_seen_bits;     /* nclients * nclients bits: client saw "joined" for user */

/* Open-addressing map from message id to slot, to detect two messages sharing an id. */
static int64_t *idmap_keys;
static int64_t *idmap_slots;
static size_t idmap_mask;

static struct {
    long joined;
    long open;
    long inflight;
    long next_to_connect;
    long closed_early;
    long join_failed;
    uint64_t deliveries;
    uint64_t id_conflicts;
    uint64_t foreign;
    uint64_t unsent;
    uint64_t error_frames;
    uint64_t presence_frames;
    uint64_t joined_frames;
    uint64_t left_frames;
    uint64_t other_frames;
    uint64_t joined_self;
    uint64_t joined_repeated;
    uint64_t bad_frames;
    int64_t last_rx_ns;
    int64_t first_send_ns;
    int64_t last_delivery_ns;
    bool measuring;
    int problems_reported;
} st;

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t next_random(void)
{
    /* xorshift64*: only used for websocket masking keys, which need no cryptographic strength. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct cpu_times {
    double user, system;
};

static struct cpu_times cpu_now(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    struct cpu_times t = {(double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
                          (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6};
    return t;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q && n) {
        fprintf(stderr, "loadgen: out of memory allocating %zu bytes\n", n);
        exit(3);
    }
    return q;
}

static void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count, size);
    if (!p && count && size) {
        fprintf(stderr, "loadgen: out of memory allocating %zu x %zu bytes\n", count, size);
        exit(3);
    }
    return p;
}

static void report_problem(long client, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report_problem(long client, const char *fmt, ...)
{
    if (st.problems_reported >= MAX_REPORTED_PROBLEMS)
        return;
    st.problems_reported++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: client %ld: ", client);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---------- histogram ---------- */

static int hist_index(uint64_t v)
{
    if (v < 128)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    int idx = shift * 64 + (int)(v >> shift);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

static double hist_bucket_mid(int idx)
{
    if (idx < 128)
        return idx;
    int shift = idx / 64 - 1;
    uint64_t mantissa = (uint64_t)(idx - shift * 64);
    double low = (double)(mantissa << shift);
    double width = (double)(1ull << shift);
    return low + width / 2;
}

static void hist_add(struct histogram *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->total++;
    h->sum += (double)v;
    if (v > h->max)
        h->max = v;
}

static double hist_percentile(const struct histogram *h, double p)
{
    if (!h->total)
        return 0;
    uint64_t rank = (uint64_t)(p * (double)h->total);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            double mid = hist_bucket_mid(i);
            return mid > (double)h->max ? (double)h->max : mid;
        }
    }
    return (double)h->max;
}

/* ---------- id map ---------- */

static void idmap_init(size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2)
        cap <<= 1;
    idmap_mask = cap - 1;
    idmap_keys = xcalloc(cap, sizeof *idmap_keys);
    idmap_slots = xcalloc(cap, sizeof *idmap_slots);
    for (size_t i = 0; i < cap; i++)
        idmap_keys[i] = INT64_MIN;
}

/* Return the slot already stored for id, or store slot and return it. */
static int64_t idmap_get_or_put(int64_t id, int64_t slot)
{
    size_t i = ((uint64_t)id * 0x9E3779B97F4A7C15ull) & idmap_mask;
    for (;;) {
        if (idmap_keys[i] == INT64_MIN) {
            idmap_keys[i] = id;
            idmap_slots[i] = slot;
            return slot;
        }
        if (idmap_keys[i] == id)
            return idmap_slots[i];
        i = (i + 1) & idmap_mask;
    }
}

/* ---------- buffers and sockets ---------- */

static void buf_reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap : 4096;
    while (n < need)
        n *= 2;
    *buf = xrealloc(*buf, n);
    *cap = n;
}

static void out_append(struct conn *c, const void *data, size_t n)
{
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
    }
    buf_reserve(&c->out, &c->out_cap, c->out_len + n);
    memcpy(c->out + c->out_len, data, n);
    c->out_len += n;
}

static void conn_fail(long idx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void conn_close(long idx)
{
    struct conn *c = &conns[idx];
    if (c->state == ST_CLOSED)
        return;
    if (c->state == ST_CONNECTING || c->state == ST_HANDSHAKE || (c->state == ST_OPEN && !c->joined))
        st.inflight--;
    if (c->state == ST_OPEN)
        st.open--;
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = ST_CLOSED;
    st.closed_early++;
    if (!c->joined)
        st.join_failed++;
}

static void conn_fail(long idx, const char *fmt, ...)
{
    struct conn *c = &conns[idx];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->failure, sizeof c->failure, fmt, ap);
    va_end(ap);
    report_problem(idx, "%s", c->failure);
    conn_close(idx);
}

/* Write queued bytes until the socket would block. Returns false if the connection failed. */
static bool conn_flush(long idx)
{
    struct conn *c = &conns[idx];
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        conn_fail(idx, "send failed: %s", strerror(errno));
        return false;
    }
    c->out_off = c->out_len = 0;
    return true;
}

/* Queue one masked client frame (RFC 6455 section 5.3: client frames must be masked). */
static void queue_frame(struct conn *c, int opcode, const char *payload, size_t len)
{
    uint8_t header[14];
    size_t h = 0;
    header[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        header[h++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        header[h++] = 0x80 | 126;
        header[h++] = (uint8_t)(len >> 8);
        header[h++] = (uint8_t)len;
    } else {
        header[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            header[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t key32 = (uint32_t)next_random();
    uint8_t key[4];
    memcpy(key, &key32, 4);
    memcpy(header + h, key, 4);
    h += 4;
    out_append(c, header, h);
    buf_reserve(&c->out, &c->out_cap, c->out_len + len);
    char *dst = c->out + c->out_len;
    for (size_t i = 0; i < len; i++)
        dst[i] = (char)(payload[i] ^ key[i & 3]);
    c->out_len += len;
}

static void start_connect(long idx)
{
    struct conn *c = &conns[idx];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "loadgen: socket() failed for client %ld: %s\n", idx, strerror(errno));
        exit(2);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = ST_CONNECTING;
    c->connect_start_ns = now_ns();
    st.inflight++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, .data.u64 = (uint64_t)idx};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        fprintf(stderr, "loadgen: epoll_ctl failed: %s\n", strerror(errno));
        exit(2);
    }
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 && errno != EINPROGRESS) {
        conn_fail(idx, "connect failed: %s", strerror(errno));
    }
}

static void send_handshake(long idx)
{
    struct conn *c = &conns[idx];
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t raw[18] = {0};
    uint64_t r1 = next_random(), r2 = next_random();
    memcpy(raw, &r1, 8);
    memcpy(raw + 8, &r2, 8);
    char key[25];
    for (int i = 0, k = 0; i < 18; i += 3) {
        uint32_t v = ((uint32_t)raw[i] << 16) | ((uint32_t)raw[i + 1] << 8) | raw[i + 2];
        key[k++] = b64[(v >> 18) & 63];
        key[k++] = b64[(v >> 12) & 63];
        key[k++] = b64[(v >> 6) & 63];
        key[k++] = b64[v & 63];
    }
    key[22] = key[23] = '=';
    key[24] = 0;
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET /join?token=%s HTTP/1.1\r\n"
                     "Host: %s:%d\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "\r\n",
                     tokens[idx], opt.host, opt.port, key);
    out_append(c, req, (size_t)n);
    c->state = ST_HANDSHAKE;
    conn_flush(idx);
}

static void connect_more(void)
{
    while (st.next_to_connect < nclients && st.inflight < opt.connect_concurrency)
        start_connect(st.next_to_connect++);
}

/* ---------- received frames ---------- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static bool starts_with(const char *p, const char *end, const char *prefix)
{
    size_t n = strlen(prefix);
    return (size_t)(end - p) >= n && memcmp(p, prefix, n) == 0;
}

/* Parse "c<client>-m<seq>" right after the opening quote of the body value. */
static bool parse_body_tag(const char *p, const char *end, long *client, long *seq)
{
    if (p >= end || *p != 'c')
        return false;
    p++;
    long a = 0, b = 0;
    const char *start = p;
    while (p < end && *p >= '0' && *p <= '9' && p - start < 12)
        a = a * 10 + (*p++ - '0');
    if (p == start || end - p < 2 || p[0] != '-' || p[1] != 'm')
        return false;
    p += 2;
    start = p;
    while (p < end && *p >= '0' && *p <= '9' && p - start < 12)
        b = b * 10 + (*p++ - '0');
    if (p == start)
        return false;
    *client = a;
    *seq = b;
    return true;
}

/*
 * Return the position of the "body": key. Servers usually put the body last, so a
 * backward scan finds it after a few bytes; memmem covers any other key order.
 */
static const char *find_body_key(const char *text, const char *end)
{
    const char *stop = end - 80 > text ? end - 80 : text;
    for (const char *p = end - 7; p >= stop; p--) {
        if (*p == '"' && memcmp(p, "\"body\":", 7) == 0)
            return p;
    }
    return memmem(text, (size_t)(end - text), "\"body\":", 7);
}

static void handle_message(long idx, int64_t id, const char *text, const char *end, int64_t rx_ns)
{
    struct conn *c = &conns[idx];
    const char *body = find_body_key(text, end);
    long sender = -1, seq = -1;
    if (body) {
        const char *v = skip_ws(body + 7, end);
        if (v < end && *v == '"')
            parse_body_tag(v + 1, end, &sender, &seq);
    }
    if (sender < 0 || sender >= nclients || seq < 0 || seq >= per_client_slots) {
        st.foreign++;
        report_problem(idx, "message id %" PRId64 " has a body this run did not post: %.120s", id, text);
        return;
    }
    int64_t slot = sender * per_client_slots + seq;
    if (send_time_ns[slot] == 0) {
        st.unsent++;
        report_problem(idx, "message id %" PRId64 " (c%ld-m%ld) arrived but was never sent", id, sender, seq);
        return;
    }
    if (slot_id[slot] == -1) {
        slot_id[slot] = id;
        if (idmap_get_or_put(id, slot) != slot) {
            st.id_conflicts++;
            report_problem(idx, "id %" PRId64 " is used for two different messages", id);
        }
    } else if (slot_id[slot] != id) {
        st.id_conflicts++;
        report_problem(idx, "message c%ld-m%ld has id %" PRId64 " here but id %" PRId64 " at another client",
                       sender, seq, id, slot_id[slot]);
    }
    uint64_t bit = (uint64_t)idx * (uint64_t)total_slots + (uint64_t)slot;
    if (received_bits[bit >> 3] & (1u << (bit & 7))) {
        c->duplicates++;
        report_problem(idx, "duplicate delivery of id %" PRId64 " (c%ld-m%ld)", id, sender, seq);
    } else {
        received_bits[bit >> 3] |= (uint8_t)(1u << (bit & 7));
        c->received++;
        st.deliveries++;
        st.last_delivery_ns = rx_ns;
        int64_t lat = rx_ns - send_time_ns[slot];
        hist_add(&latency, lat > 0 ? (uint64_t)(lat / 1000) : 0);
    }
    if (id <= c->last_id) {
        c->out_of_order++;
        report_problem(idx, "id %" PRId64 " arrived after id %" PRId64, id, c->last_id);
    }
    c->last_id = id;
    c->seq_hash = (c->seq_hash ^ (uint64_t)id) * 1099511628211ull;
}

/*
 * Count "joined" frames that announce the receiving client itself and repeated ones for
 * the same user. The runner names the user of token i "bench<i>", which gives the index.
 */
static void check_joined_frame(long idx, const char *p, const char *end)
{
    const char *name = memmem(p, (size_t)(end - p), "\"name\":", 7);
    if (!name)
        return;
    const char *v = skip_ws(name + 7, end);
    if (!starts_with(v, end, "\"bench"))
        return;
    v += 6;
    long user = 0;
    const char *digits = v;
    while (v < end && *v >= '0' && *v <= '9' && v - digits < 12)
        user = user * 10 + (*v++ - '0');
    if (v == digits || v >= end || *v != '"' || user >= nclients)
        return;
    if (user == idx)
        st.joined_self++;
    uint64_t bit = (uint64_t)idx * (uint64_t)nclients + (uint64_t)user;
    if (joined_seen_bits[bit >> 3] & (1u << (bit & 7)))
        st.joined_repeated++;
    joined_seen_bits[bit >> 3] |= (uint8_t)(1u << (bit & 7));
}

static void handle_text(long idx, const char *text, size_t len, int64_t rx_ns)
{
    struct conn *c = &conns[idx];
    const char *end = text + len;
    const char *p = skip_ws(text, end);
    if (starts_with(p, end, "{\"id\":")) {
        const char *v = skip_ws(p + 6, end);
        if (v < end && *v == '"') {
            if (!c->joined) {
                c->joined = true;
                st.joined++;
                hist_add(&join_latency, (uint64_t)((now_ns() - c->connect_start_ns) / 1000));
                st.inflight--;
            }
            return;
        }
        if (v < end && ((*v >= '0' && *v <= '9') || *v == '-')) {
            int64_t id = strtoll(v, NULL, 10);
            handle_message(idx, id, p, end, rx_ns);
            return;
        }
        st.bad_frames++;
        report_problem(idx, "cannot parse the id of frame: %.120s", text);
        return;
    }
    if (starts_with(p, end, "{\"type\":")) {
        const char *v = skip_ws(p + 8, end);
        if (starts_with(v, end, "\"presence\"")) {
            st.presence_frames++;
            c->presence = true;
        } else if (starts_with(v, end, "\"joined\"")) {
            st.joined_frames++;
            check_joined_frame(idx, v, end);
        } else if (starts_with(v, end, "\"left\"")) {
            st.left_frames++;
        } else if (starts_with(v, end, "\"error\"")) {
            st.error_frames++;
            report_problem(idx, "error frame: %.200s", text);
        } else {
            st.other_frames++;
        }
        return;
    }
    st.bad_frames++;
    report_problem(idx, "unexpected frame: %.120s", text);
}

static void handle_close_frame(long idx, const uint8_t *payload, size_t len)
{
    struct conn *c = &conns[idx];
    c->close_code = len >= 2 ? (payload[0] << 8 | payload[1]) : 1005;
    size_t rl = len > 2 ? len - 2 : 0;
    if (rl >= sizeof c->close_reason)
        rl = sizeof c->close_reason - 1;
    memcpy(c->close_reason, payload + 2, rl);
    c->close_reason[rl] = 0;
    uint8_t reply[2] = {(uint8_t)(c->close_code >> 8), (uint8_t)c->close_code};
    queue_frame(c, 8, (const char *)reply, len >= 2 ? 2 : 0);
    conn_flush(idx);
    conn_fail(idx, "server closed the websocket with code %d reason \"%s\"", c->close_code, c->close_reason);
}

/* Parse every complete frame in buf. Returns bytes consumed, or -1 if the connection was closed. */
static long parse_frames(long idx, char *buf, size_t len, int64_t rx_ns)
{
    struct conn *c = &conns[idx];
    size_t pos = 0;
    while (len - pos >= 2) {
        const uint8_t *h = (const uint8_t *)buf + pos;
        bool fin = h[0] & 0x80;
        int opcode = h[0] & 0x0f;
        bool masked = h[1] & 0x80;
        uint64_t plen = h[1] & 0x7f;
        size_t hlen = 2;
        if (plen == 126) {
            if (len - pos < 4)
                break;
            plen = (uint64_t)h[2] << 8 | h[3];
            hlen = 4;
        } else if (plen == 127) {
            if (len - pos < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | h[2 + i];
            hlen = 10;
        }
        if (masked) {
            conn_fail(idx, "server sent a masked frame (RFC 6455 forbids it)");
            return -1;
        }
        if (h[0] & 0x70) {
            conn_fail(idx, "server frame has RSV bits set (no extension was negotiated)");
            return -1;
        }
        if (len - pos - hlen < plen)
            break;
        char *payload = buf + pos + hlen;
        pos += hlen + plen;
        switch (opcode) {
        case 0x0: /* continuation */
            if (!c->frag_opcode) {
                conn_fail(idx, "continuation frame without a started message");
                return -1;
            }
            buf_reserve(&c->frag, &c->frag_cap, c->frag_len + plen);
            memcpy(c->frag + c->frag_len, payload, plen);
            c->frag_len += plen;
            if (fin) {
                if (c->frag_opcode == 1)
                    handle_text(idx, c->frag, c->frag_len, rx_ns);
                c->frag_opcode = 0;
                c->frag_len = 0;
            }
            break;
        case 0x1: /* text */
        case 0x2: /* binary */
            if (fin) {
                if (opcode == 1)
                    handle_text(idx, payload, plen, rx_ns);
                else
                    st.other_frames++;
            } else {
                c->frag_opcode = opcode;
                c->frag_len = 0;
                buf_reserve(&c->frag, &c->frag_cap, plen);
                memcpy(c->frag, payload, plen);
                c->frag_len = plen;
            }
            break;
        case 0x8:
            handle_close_frame(idx, (const uint8_t *)payload, plen);
            return -1;
        case 0x9: /* ping: reply with a pong carrying the same payload */
            queue_frame(c, 0xA, payload, plen);
            if (!conn_flush(idx))
                return -1;
            break;
        case 0xA:
            break;
        default:
            conn_fail(idx, "unknown opcode %d", opcode);
            return -1;
        }
        if (c->state == ST_CLOSED)
            return -1;
    }
    return (long)pos;
}

/* Consume the HTTP upgrade response at the front of c->in. Returns false if the connection failed. */
static bool parse_handshake(long idx)
{
    struct conn *c = &conns[idx];
    char *hdr_end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!hdr_end) {
        if (c->in_len > 65536) {
            conn_fail(idx, "upgrade response headers exceed 64 KiB");
            return false;
        }
        return true;
    }
    size_t hlen = (size_t)(hdr_end - c->in) + 4;
    if (c->in_len < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0) {
        char *line_end = memchr(c->in, '\r', c->in_len);
        int line_len = line_end ? (int)(line_end - c->in) : (int)(c->in_len < 80 ? c->in_len : 80);
        size_t body_len = c->in_len - hlen;
        conn_fail(idx, "upgrade rejected: \"%.*s\" body: %.*s", line_len, c->in, (int)(body_len < 100 ? body_len : 100),
                  c->in + hlen);
        return false;
    }
    c->state = ST_OPEN;
    st.open++;
    memmove(c->in, c->in + hlen, c->in_len - hlen);
    c->in_len -= hlen;
    return true;
}

static void on_readable(long idx)
{
    struct conn *c = &conns[idx];
    static char *scratch;
    if (!scratch)
        scratch = xrealloc(NULL, READ_CHUNK);
    for (;;) {
        if (c->state == ST_CLOSED)
            return;
        bool use_scratch = c->in_len == 0 && c->state == ST_OPEN;
        char *dst;
        size_t room;
        if (use_scratch) {
            dst = scratch;
            room = READ_CHUNK;
        } else {
            buf_reserve(&c->in, &c->in_cap, c->in_len + READ_CHUNK);
            dst = c->in + c->in_len;
            room = READ_CHUNK;
        }
        ssize_t n = recv(c->fd, dst, room, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            conn_fail(idx, "recv failed: %s", strerror(errno));
            return;
        }
        if (n == 0) {
            conn_fail(idx, "server closed the TCP connection without a close frame");
            return;
        }
        int64_t rx = now_ns();
        st.last_rx_ns = rx;
        char *buf;
        size_t len;
        if (use_scratch) {
            buf = scratch;
            len = (size_t)n;
        } else {
            c->in_len += (size_t)n;
            if (c->state == ST_HANDSHAKE) {
                if (!parse_handshake(idx))
                    return;
                if (c->state != ST_OPEN)
                    continue;
            }
            buf = c->in;
            len = c->in_len;
        }
        long used = parse_frames(idx, buf, len, rx);
        if (used < 0)
            return;
        size_t rest = len - (size_t)used;
        if (use_scratch) {
            if (rest) {
                buf_reserve(&c->in, &c->in_cap, rest);
                memcpy(c->in, scratch + used, rest);
                c->in_len = rest;
            }
        } else {
            memmove(c->in, c->in + used, rest);
            c->in_len = rest;
        }
    }
}

static void on_event(long idx, uint32_t events)
{
    struct conn *c = &conns[idx];
    if (c->state == ST_CONNECTING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_fail(idx, "connect failed: %s", strerror(err));
            return;
        }
        send_handshake(idx);
    }
    if (c->state == ST_CLOSED)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        on_readable(idx);
    if (c->state != ST_CLOSED && (events & EPOLLOUT) && c->out_len > c->out_off)
        conn_flush(idx);
}

/* ---------- sending posts ---------- */

static void post_message(long client, long seq, int64_t t)
{
    struct conn *c = &conns[client];
    char body[64 + 4096];
    int n = snprintf(body, 64, "c%ld-m%ld", client, seq);
    if (opt.body_pad > 0) {
        body[n++] = ' ';
        memset(body + n, 'x', (size_t)opt.body_pad);
        n += (int)opt.body_pad;
    }
    send_time_ns[client * per_client_slots + seq] = t;
    messages_sent++;
    if (c->state == ST_OPEN)
        queue_frame(c, 1, body, (size_t)n);
}

/* ---------- main loop helpers ---------- */

static bool stdin_open = true;

/* Read stdin and return true once a line "go" arrives. */
static bool read_go(void)
{
    static char line[256];
    static size_t used;
    ssize_t n = read(0, line + used, sizeof line - 1 - used);
    if (n <= 0) {
        stdin_open = false;
        epoll_ctl(epfd, EPOLL_CTL_DEL, 0, NULL);
        return false;
    }
    used += (size_t)n;
    line[used] = 0;
    bool go = strstr(line, "go") != NULL;
    if (used >= sizeof line - 1 || strchr(line, '\n'))
        used = 0;
    return go;
}

static void poll_once(int timeout_ms, bool *go_seen)
{
    struct epoll_event events[MAX_EVENTS];
    int n = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
    if (n < 0 && errno != EINTR) {
        fprintf(stderr, "loadgen: epoll_wait failed: %s\n", strerror(errno));
        exit(2);
    }
    for (int i = 0; i < n; i++) {
        if (events[i].data.u64 == STDIN_TAG) {
            if (read_go() && go_seen)
                *go_seen = true;
            continue;
        }
        on_event((long)events[i].data.u64, events[i].events);
    }
}

static long clients_alive(void)
{
    long alive = 0;
    for (long i = 0; i < nclients; i++)
        alive += conns[i].state != ST_CLOSED;
    return alive;
}

static bool all_delivered(void)
{
    for (long i = 0; i < nclients; i++)
        if (conns[i].state != ST_CLOSED && conns[i].received < (uint64_t)messages_planned)
            return false;
    return true;
}

/* ---------- setup ---------- */

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s --port PORT --tokens FILE [options]\n"
            "  --host ADDR              server IPv4 loopback address (default 127.0.0.1)\n"
            "  --messages M             burst mode: messages each client posts at once (default 1)\n"
            "  --rate R --duration T    steady mode: R messages per second in total for T seconds\n"
            "  --body-pad B             append B filler bytes to each body (default 0)\n"
            "  --wait-go                after all clients joined, print a ready line and wait for \"go\" on stdin\n"
            "  --settle-ms MS           quiet time after the last join before ready (default 500)\n"
            "  --connect-concurrency C  connections being opened at once (default 100)\n"
            "  --join-timeout S         limit in seconds for opening all websockets and for the settle wait\n"
            "                           (default 300)\n"
            "  --timeout S              limit in seconds for the delivery phase after the last post (default 60)\n",
            prog);
}

static void load_tokens(void)
{
    FILE *f = fopen(opt.tokens_path, "r");
    if (!f) {
        fprintf(stderr, "loadgen: failed to open tokens file %s: %s\n", opt.tokens_path, strerror(errno));
        exit(2);
    }
    char line[MAX_TOKEN_LEN + 2];
    long cap = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = 0;
        if (!len)
            continue;
        for (size_t i = 0; i < len; i++) {
            char ch = line[i];
            bool ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      ch == '-' || ch == '_' || ch == '.';
            if (!ok) {
                fprintf(stderr, "loadgen: token on line %ld contains '%c', which is not URL-safe\n", nclients + 1,
                        ch);
                exit(2);
            }
        }
        if (nclients == cap) {
            cap = cap ? cap * 2 : 1024;
            tokens = xrealloc(tokens, (size_t)cap * sizeof *tokens);
        }
        tokens[nclients++] = strdup(line);
    }
    fclose(f);
    if (!nclients) {
        fprintf(stderr, "loadgen: tokens file %s contains no tokens\n", opt.tokens_path);
        exit(2);
    }
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t need = (rlim_t)nclients + 64;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            fprintf(stderr, "loadgen: setrlimit(RLIMIT_NOFILE) failed: %s\n", strerror(errno));
        }
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < need) {
        fprintf(stderr,
                "loadgen: %ld clients need %lu file descriptors but the hard limit RLIMIT_NOFILE is %lu; "
                "raise it (ulimit -Hn) or use fewer clients\n",
                nclients, (unsigned long)need, (unsigned long)rl.rlim_max);
        exit(2);
    }
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'h'},        {"port", required_argument, 0, 'p'},
        {"tokens", required_argument, 0, 't'},      {"messages", required_argument, 0, 'm'},
        {"rate", required_argument, 0, 'r'},        {"duration", required_argument, 0, 'd'},
        {"wait-go", no_argument, 0, 'g'},           {"settle-ms", required_argument, 0, 's'},
        {"connect-concurrency", required_argument, 0, 'c'}, {"timeout", required_argument, 0, 'T'},
        {"body-pad", required_argument, 0, 'b'},    {"join-timeout", required_argument, 0, 'J'},
        {0, 0, 0, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 't': opt.tokens_path = optarg; break;
        case 'm': opt.messages = atol(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'g': opt.wait_go = true; break;
        case 's': opt.settle_ms = atol(optarg); break;
        case 'c': opt.connect_concurrency = atol(optarg); break;
        case 'T': opt.timeout_s = atof(optarg); break;
        case 'b': opt.body_pad = atol(optarg); break;
        case 'J': opt.join_timeout_s = atof(optarg); break;
        default: usage(argv[0]); exit(2);
        }
    }
    if (opt.port <= 0 || opt.port > 65535 || !opt.tokens_path) {
        usage(argv[0]);
        exit(2);
    }
    if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1 ||
        (ntohl(server_addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "loadgen: --host %s is not an IPv4 loopback address (127.0.0.0/8)\n", opt.host);
        exit(2);
    }
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt.port);
    bool steady = opt.rate > 0 || opt.duration > 0;
    if (steady && (opt.rate <= 0 || opt.duration <= 0)) {
        fprintf(stderr, "loadgen: steady mode needs both --rate and --duration above 0\n");
        exit(2);
    }
    if (!steady && opt.messages < 1) {
        fprintf(stderr, "loadgen: --messages must be at least 1\n");
        exit(2);
    }
    if (opt.body_pad < 0 || opt.body_pad > 4000) {
        fprintf(stderr, "loadgen: --body-pad must be between 0 and 4000\n");
        exit(2);
    }
    if (opt.connect_concurrency < 1)
        opt.connect_concurrency = 1;
}

static bool print_result(bool timed_out, struct cpu_times total, struct cpu_times phase, double join_s, bool steady)
{
    long complete = 0, incomplete = 0, hash_mismatch = 0, closed = 0;
    uint64_t dups = 0, disorder = 0;
    uint64_t ref_hash = 0;
    bool have_ref = false;
    for (long i = 0; i < nclients; i++) {
        struct conn *c = &conns[i];
        dups += c->duplicates;
        disorder += c->out_of_order;
        if (c->state == ST_CLOSED)
            closed++;
        if (c->received == (uint64_t)messages_planned) {
            complete++;
            if (!have_ref) {
                ref_hash = c->seq_hash;
                have_ref = true;
            } else if (c->seq_hash != ref_hash) {
                hash_mismatch++;
                report_problem(i, "received id sequence differs from client 0's");
            }
        } else {
            incomplete++;
            report_problem(i, "received %" PRIu64 " of %ld messages%s%s", c->received, messages_planned,
                           c->failure[0] ? "; " : "", c->failure);
        }
    }
    bool ok = !timed_out && incomplete == 0 && dups == 0 && disorder == 0 && hash_mismatch == 0 &&
              st.id_conflicts == 0 && st.foreign == 0 && st.unsent == 0 && st.error_frames == 0 &&
              st.bad_frames == 0 && messages_sent == messages_planned;
    double fanout = st.last_delivery_ns > st.first_send_ns ? (st.last_delivery_ns - st.first_send_ns) / 1e9 : 0;
    printf("{\"event\":\"result\",\"ok\":%s,\"mode\":\"%s\",\"clients\":%ld,\"joined\":%ld,"
           "\"messages_per_client\":%ld,"
           "\"messages_sent\":%ld,\"expected_per_client\":%ld,\"expected_deliveries\":%" PRIu64 ","
           "\"deliveries\":%" PRIu64 ",\"complete_clients\":%ld,\"incomplete_clients\":%ld,"
           "\"closed_clients\":%ld,\"duplicates\":%" PRIu64 ",\"out_of_order\":%" PRIu64 ","
           "\"order_mismatch_clients\":%ld,\"id_conflicts\":%" PRIu64 ",\"foreign_messages\":%" PRIu64 ","
           "\"unsent_messages\":%" PRIu64 ",\"error_frames\":%" PRIu64 ",\"unparsed_frames\":%" PRIu64 ","
           "\"presence_frames\":%" PRIu64 ",\"joined_frames\":%" PRIu64 ",\"left_frames\":%" PRIu64 ","
           "\"other_frames\":%" PRIu64 ",\"timed_out\":%s,\"join_seconds\":%.6f,\"fanout_seconds\":%.6f,"
           "\"deliveries_per_second\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,"
           "\"max\":%" PRIu64 ",\"mean\":%.1f},\"loadgen_cpu_seconds\":%.4f,\"loadgen_user_seconds\":%.4f,\"loadgen_system_seconds\":%.4f,"
           "\"loadgen_cpu_seconds_total\":%.4f}\n",
           ok ? "true" : "false", steady ? "steady" : "burst", nclients, st.joined, per_client_slots, messages_sent,
           messages_planned, (uint64_t)messages_planned * (uint64_t)nclients, st.deliveries, complete, incomplete,
           closed, dups, disorder, hash_mismatch, st.id_conflicts, st.foreign, st.unsent, st.error_frames,
           st.bad_frames, st.presence_frames, st.joined_frames, st.left_frames, st.other_frames,
           timed_out ? "true" : "false", join_s, fanout, fanout > 0 ? st.deliveries / fanout : 0.0,
           hist_percentile(&latency, 0.50), hist_percentile(&latency, 0.90), hist_percentile(&latency, 0.99),
           latency.max, latency.total ? latency.sum / latency.total : 0.0, phase.user + phase.system, phase.user,
           phase.system, total.user + total.system);
    fflush(stdout);
    if (!ok)
        fprintf(stderr, "loadgen: FAILED: not every client received every message exactly once in one order\n");
    return ok;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    load_tokens();
    raise_fd_limit();
    rng_state ^= (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);

    bool steady = opt.rate > 0;
    if (steady) {
        messages_planned = (long)(opt.rate * opt.duration + 0.5);
        if (messages_planned < 1)
            messages_planned = 1;
        per_client_slots = (messages_planned + nclients - 1) / nclients;
    } else {
        messages_planned = nclients * opt.messages;
        per_client_slots = opt.messages;
    }
    total_slots = nclients * per_client_slots;
    uint64_t bits = (uint64_t)nclients * (uint64_t)total_slots;
    conns = xcalloc((size_t)nclients, sizeof *conns);
    send_time_ns = xcalloc((size_t)total_slots, sizeof *send_time_ns);
    slot_id = xcalloc((size_t)total_slots, sizeof *slot_id);
    for (long i = 0; i < total_slots; i++)
        slot_id[i] = -1;
    received_bits = xcalloc((size_t)(bits / 8 + 1), 1);
    joined_seen_bits = xcalloc((size_t)((uint64_t)nclients * (uint64_t)nclients / 8 + 1), 1);
    idmap_init((size_t)total_slots);
    for (long i = 0; i < nclients; i++) {
        conns[i].fd = -1;
        conns[i].last_id = INT64_MIN;
        conns[i].seq_hash = 14695981039346656037ull;
    }

    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (opt.wait_go) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) < 0) {
            fprintf(stderr, "loadgen: failed to watch stdin for \"go\": %s\n", strerror(errno));
            exit(2);
        }
    }

    /* Join phase: open connections, at most --connect-concurrency not yet joined at a time. */
    int64_t t_start = now_ns();
    int64_t join_deadline = t_start + (int64_t)(opt.join_timeout_s * 1e9);
    connect_more();
    while (st.joined + st.join_failed < nclients) {
        if (now_ns() > join_deadline) {
            fprintf(stderr, "loadgen: join phase timed out after %.0f s with %ld of %ld clients joined\n",
                    opt.join_timeout_s, st.joined, nclients);
            break;
        }
        poll_once(100, NULL);
        connect_more();
    }
    int64_t t_joined = now_ns();
    double join_s = (t_joined - t_start) / 1e9;
    printf("{\"event\":\"joined\",\"joined\":%ld,\"failed\":%ld,\"seconds\":%.6f,"
           "\"join_latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%" PRIu64 "}}\n",
           st.joined, st.join_failed, join_s, hist_percentile(&join_latency, 0.50),
           hist_percentile(&join_latency, 0.99), join_latency.max);
    fflush(stdout);
    if (st.joined < nclients) {
        static const char *const state_names[] = {"not started", "connecting", "waiting for the upgrade response",
                                                  "upgraded, waiting for the first frame", "closed"};
        for (long i = 0; i < nclients; i++) {
            if (!conns[i].joined)
                report_problem(i, "did not join: %s%s%s", state_names[conns[i].state],
                               conns[i].failure[0] ? "; " : "", conns[i].failure);
        }
        struct cpu_times none = {0, 0};
        bool still_joining = st.joined + st.join_failed < nclients;
        print_result(still_joining, cpu_now(), none, join_s, steady);
        return 1;
    }

    /* Settle: wait until the join-time frames (presence, joined) stop arriving. */
    int64_t settle_deadline = t_joined + (int64_t)(opt.join_timeout_s * 1e9);
    st.last_rx_ns = now_ns();
    for (;;) {
        int64_t quiet_until = st.last_rx_ns + opt.settle_ms * 1000000;
        int64_t t = now_ns();
        if (t >= quiet_until || t >= settle_deadline)
            break;
        poll_once((int)((quiet_until - t) / 1000000) + 1, NULL);
    }
    long presence_clients = 0;
    for (long i = 0; i < nclients; i++)
        presence_clients += conns[i].presence;
    printf("{\"event\":\"ready\",\"joined\":%ld,\"alive\":%ld,\"presence_clients\":%ld,"
           "\"joined_frames\":%" PRIu64 ",\"joined_self_frames\":%" PRIu64 ",\"joined_repeated_frames\":%" PRIu64
           ",\"join_seconds\":%.6f,\"join_latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%" PRIu64 "},"
           "\"seconds\":%.6f}\n",
           st.joined, clients_alive(), presence_clients, st.joined_frames, st.joined_self, st.joined_repeated,
           join_s, hist_percentile(&join_latency, 0.50), hist_percentile(&join_latency, 0.99), join_latency.max,
           (now_ns() - t_start) / 1e9);
    fflush(stdout);

    if (opt.wait_go) {
        bool go = false;
        while (!go && stdin_open)
            poll_once(1000, &go);
        if (!go) {
            fprintf(stderr, "loadgen: stdin closed before \"go\"; exiting\n");
            return 1;
        }
    }

    /* Measurement phase. */
    struct cpu_times cpu_before = cpu_now();
    st.measuring = true;
    bool timed_out = false;
    int64_t t0 = now_ns();
    st.first_send_ns = t0;
    if (!steady) {
        for (long i = 0; i < nclients; i++) {
            int64_t t = now_ns();
            for (long s = 0; s < opt.messages; s++)
                post_message(i, s, t);
            if (conns[i].state == ST_OPEN)
                conn_flush(i);
        }
    }
    double interval_ns = steady ? 1e9 / opt.rate : 0;
    int64_t deadline = t0 + (int64_t)((opt.timeout_s + (steady ? opt.duration : 0)) * 1e9);
    for (;;) {
        int64_t t = now_ns();
        if (steady) {
            while (messages_sent < messages_planned && t >= t0 + (int64_t)(messages_sent * interval_ns)) {
                long k = messages_sent;
                long client = k % nclients;
                post_message(client, k / nclients, t);
                if (conns[client].state == ST_OPEN)
                    conn_flush(client);
            }
        }
        if (messages_sent == messages_planned && all_delivered())
            break;
        if (t > deadline) {
            timed_out = true;
            fprintf(stderr, "loadgen: delivery phase timed out after %.0f s (%" PRIu64 " of %" PRIu64
                    " deliveries)\n", (t - t0) / 1e9, st.deliveries,
                    (uint64_t)messages_planned * (uint64_t)nclients);
            break;
        }
        int wait_ms = 50;
        if (steady && messages_sent < messages_planned) {
            int64_t next = t0 + (int64_t)(messages_sent * interval_ns);
            /* Round up so the loop sleeps instead of spinning in the last millisecond. */
            wait_ms = next > t ? (int)((next - t + 999999) / 1000000) : 0;
        }
        poll_once(wait_ms, NULL);
    }
    struct cpu_times cpu_after = cpu_now();
    struct cpu_times cpu_phase = {cpu_after.user - cpu_before.user, cpu_after.system - cpu_before.system};
    bool ok = print_result(timed_out, cpu_after, cpu_phase, join_s, steady);

    /* Send a close frame on every open connection. The kernel closes the sockets at exit. */
    for (long i = 0; i < nclients; i++) {
        if (conns[i].state == ST_OPEN) {
            uint8_t code[2] = {0x03, 0xE8};
            queue_frame(&conns[i], 8, (const char *)code, 2);
            conn_flush(i);
        }
    }
    return ok ? 0 : 1;
}
