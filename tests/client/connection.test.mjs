// ChatConnection driven with fake sockets and a fake clock: frame parsing,
// subprotocol auth, since= on reconnect, backoff and session end.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { createBackoff } from "../../client/backoff.js";
import { ChatConnection, STABLE_AFTER_MS, joinUrl, parseFrame } from "../../client/connection.js";

const BASE = "ws://127.0.0.1:8080/join";
const TOKEN = "ab".repeat(32);

class FakeSocket {
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
  }

  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame) {
    this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }

  /** Simulates the server (or the network) closing the socket. */
  drop(code, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  send(text) {
    this.sent.push(text);
  }

  close(code, reason) {
    this.readyState = 3;
    this.closedWith = { code, reason };
  }
}

/** Fake timers: `advance(ms)` runs every callback that falls due, in order. */
class FakeClock {
  constructor() {
    this.time = 0;
    this.timers = new Map();
    this.nextId = 1;
  }

  now() {
    return this.time;
  }

  setTimeout(callback, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, callback });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      const due = [...this.timers.entries()]
        .filter(([, timer]) => timer.at <= end)
        .sort((a, b) => a[1].at - b[1].at);
      if (due.length === 0) {
        break;
      }
      const [id, timer] = due[0];
      this.timers.delete(id);
      this.time = timer.at;
      timer.callback();
    }
    this.time = end;
  }
}

/** Lets pending promise callbacks (the token check) run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

function setup({ tokenAccepted = true } = {}) {
  const sockets = [];
  const clock = new FakeClock();
  const events = { statuses: [], ready: [], frames: [], ended: [] };
  let lastSeenId = 0;
  const connection = new ChatConnection({
    url: BASE,
    token: TOKEN,
    lastSeenId: () => lastSeenId,
    checkToken: async () => tokenAccepted,
    createSocket: (url, protocols) => {
      const socket = new FakeSocket(url, protocols);
      sockets.push(socket);
      return socket;
    },
    backoff: createBackoff({ baseMs: 1000, maxMs: 8000, jitter: 0.5, random: () => 0 }),
    clock,
    handlers: {
      onStatus: (status) => events.statuses.push(status),
      onReady: (ready) => events.ready.push(ready),
      onFrame: (frame) => events.frames.push(frame),
      onSessionEnded: (reason) => events.ended.push(reason),
    },
  });
  return {
    connection,
    sockets,
    clock,
    events,
    setLastSeenId: (id) => {
      lastSeenId = id;
    },
  };
}

const alice = { id: "a1", name: "Alice" };

/** Opens the newest socket and sends the first frame, as the server does. */
function accept(socket) {
  socket.open();
  socket.receive(alice);
}

describe("parseFrame", () => {
  test("first frame is the session user", () => {
    assert.deepEqual(parseFrame(JSON.stringify(alice), true), { kind: "user", user: alice });
  });

  test("message frame has an integer id and no type", () => {
    const message = { id: 7, user: alice, time: "2026-12-04T20:15:28.123456Z", body: "hi" };

    assert.deepEqual(parseFrame(JSON.stringify(message), false), { kind: "message", message });
  });

  test("typed frames", () => {
    assert.deepEqual(parseFrame('{"type":"presence","users":[]}', false), { kind: "presence", users: [] });
    assert.deepEqual(parseFrame(JSON.stringify({ type: "joined", user: alice }), false), {
      kind: "joined",
      user: alice,
    });
    assert.deepEqual(parseFrame(JSON.stringify({ type: "left", user: alice }), false), {
      kind: "left",
      user: alice,
    });
    assert.deepEqual(parseFrame('{"type":"gap","first_missing":3,"last_missing":9}', false), {
      kind: "gap",
      firstMissing: 3,
      lastMissing: 9,
    });
    assert.deepEqual(parseFrame('{"type":"error","code":"too_large","error":"Too large."}', false), {
      kind: "error",
      code: "too_large",
      error: "Too large.",
    });
  });

  test("invalid frames are unknown", () => {
    for (const text of ["not json", "[1,2]", "null", "42", '{"type":"nope"}', '{"name":"x"}']) {
      assert.equal(parseFrame(text, false).kind, "unknown", text);
    }
  });
});

describe("joinUrl", () => {
  test("adds since only after a message was seen", () => {
    assert.equal(joinUrl(BASE, 0), BASE);
    assert.equal(joinUrl(BASE, 250), `${BASE}?since=250`);
  });
});

describe("ChatConnection", () => {
  test("authenticates with subprotocols, never the URL", () => {
    const { connection, sockets } = setup();

    connection.start();

    assert.equal(sockets.length, 1);
    assert.deepEqual(sockets[0].protocols, ["chatroom", `bearer.${TOKEN}`]);
    assert.ok(!sockets[0].url.includes(TOKEN), sockets[0].url);
  });

  test("goes online on the user frame and passes frames on", () => {
    const { connection, sockets, events } = setup();
    connection.start();

    accept(sockets[0]);
    sockets[0].receive({ type: "presence", users: [alice] });

    assert.equal(connection.status.state, "online");
    assert.deepEqual(events.ready, [{ user: alice, since: null }]);
    assert.deepEqual(events.frames, [{ kind: "presence", users: [alice] }]);
  });

  test("send works only when ready", () => {
    const { connection, sockets } = setup();
    connection.start();

    assert.equal(connection.send("early"), false);
    sockets[0].open();
    assert.equal(connection.send("before user frame"), false);
    sockets[0].receive(alice);
    assert.equal(connection.send("hello"), true);

    assert.deepEqual(sockets[0].sent, ["hello"]);
  });

  test("reconnects with since after a drop", async () => {
    const { connection, sockets, clock, events, setLastSeenId } = setup();
    connection.start();
    accept(sockets[0]);
    setLastSeenId(252);

    sockets[0].drop(1006);
    await settle();

    assert.equal(connection.status.state, "reconnecting");
    assert.equal(connection.status.retryAt, 1000);
    assert.equal(sockets.length, 1);

    clock.advance(1000);

    assert.equal(sockets.length, 2);
    assert.equal(sockets[1].url, `${BASE}?since=252`);
    accept(sockets[1]);
    assert.deepEqual(events.ready.at(-1), { user: alice, since: 252 });
  });

  test("backoff grows while reconnects fail", async () => {
    const { connection, sockets, clock } = setup();
    connection.start();
    const delays = [];

    for (let attempt = 0; attempt < 5; attempt += 1) {
      sockets.at(-1).drop(1006);
      await settle();
      delays.push(connection.status.retryAt - clock.now());
      clock.advance(connection.status.retryAt - clock.now());
    }

    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 8000]);
    assert.equal(sockets.length, 6);
  });

  test("backoff resets after a stable connection", async () => {
    const { connection, sockets, clock } = setup();
    connection.start();
    for (let attempt = 0; attempt < 3; attempt += 1) {
      sockets.at(-1).drop(1006);
      await settle();
      clock.advance(connection.status.retryAt - clock.now());
    }
    accept(sockets.at(-1));

    clock.advance(STABLE_AFTER_MS);
    sockets.at(-1).drop(1001);
    await settle();

    assert.equal(connection.status.retryAt - clock.now(), 1000);
  });

  test("backoff keeps growing when connections drop at once", async () => {
    const { connection, sockets, clock } = setup();
    connection.start();
    const delays = [];

    // The server accepts, then closes at once (e.g. "rate limit exceeded").
    for (let attempt = 0; attempt < 3; attempt += 1) {
      accept(sockets.at(-1));
      sockets.at(-1).drop(1008, "rate limit exceeded");
      await settle();
      delays.push(connection.status.retryAt - clock.now());
      clock.advance(connection.status.retryAt - clock.now());
    }

    assert.deepEqual(delays, [1000, 2000, 4000]);
  });

  for (const reason of ["logged out", "token expired"]) {
    test(`close 1008 "${reason}" ends the session`, async () => {
      const { connection, sockets, clock, events } = setup();
      connection.start();
      accept(sockets[0]);

      sockets[0].drop(1008, reason);
      await settle();
      clock.advance(60_000);

      assert.deepEqual(events.ended, [reason]);
      assert.equal(connection.status.state, "stopped");
      assert.equal(sockets.length, 1);
    });
  }

  test("rejected upgrade with an invalid token ends the session", async () => {
    const { connection, sockets, clock, events } = setup({ tokenAccepted: false });
    connection.start();

    // A 401 before the upgrade reaches the page only as close 1006 without open.
    sockets[0].drop(1006);
    await settle();
    clock.advance(60_000);

    assert.deepEqual(events.ended, ["token rejected"]);
    assert.equal(sockets.length, 1);
  });

  test("origin not allowed stops retrying", async () => {
    const { connection, sockets, clock } = setup();
    connection.start();
    accept(sockets[0]);

    sockets[0].drop(1008, "origin not allowed");
    await settle();
    clock.advance(60_000);

    assert.equal(connection.status.state, "offline");
    assert.equal(sockets.length, 1);
  });

  test("stop cancels a pending reconnect", async () => {
    const { connection, sockets, clock } = setup();
    connection.start();
    sockets[0].drop(1006);
    await settle();

    connection.stop();
    clock.advance(60_000);

    assert.equal(sockets.length, 1);
    assert.equal(connection.status.state, "stopped");
  });

  test("stop closes the open socket with 1000", () => {
    const { connection, sockets } = setup();
    connection.start();
    accept(sockets[0]);

    connection.stop();

    assert.equal(sockets[0].closedWith.code, 1000);
  });

  test("reconnectNow skips the wait", async () => {
    const { connection, sockets } = setup();
    connection.start();
    sockets[0].drop(1006);
    await settle();

    connection.reconnectNow();

    assert.equal(sockets.length, 2);
    assert.equal(connection.status.state, "connecting");
  });

  test("no network waits for the online event", async () => {
    const { connection, sockets, clock } = setup();
    connection.start();
    accept(sockets[0]);

    connection.setNetworkAvailable(false);
    sockets[0].drop(1006);
    await settle();
    clock.advance(60_000);

    assert.equal(connection.status.state, "offline");
    assert.equal(sockets.length, 1);

    connection.setNetworkAvailable(true);

    assert.equal(sockets.length, 2);
  });

  test("frames of a replaced socket are ignored", async () => {
    const { connection, sockets, events } = setup();
    connection.start();
    accept(sockets[0]);
    sockets[0].drop(1006);
    await settle();
    connection.reconnectNow();

    sockets[0].receive({ id: 1, user: alice, time: "2026-12-04T20:15:28Z", body: "stale" });

    assert.deepEqual(events.frames, []);
  });
});
