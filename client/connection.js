// The websocket to /join: frame parsing, connection status and automatic
// reconnects with backoff and `since=`. The socket factory and the timers are
// injectable, and nothing here touches the DOM or `window`, so Node tests can
// drive a ChatConnection with fake sockets and fake time.

import { createBackoff } from "./backoff.js";

/** A connection that stayed up this long resets the backoff schedule, in milliseconds. */
export const STABLE_AFTER_MS = 5000;

/** Reasons of a 1008 close that end the session: reconnecting with the same token cannot work. */
export const SESSION_END_REASONS = new Set(["logged out", "token expired"]);

/** Reasons of a 1008 close after which retrying the same way would only be rejected again. */
const FATAL_POLICY_REASONS = new Set(["origin not allowed"]);

/** WebSocket.OPEN; spelled out because Node 20 has no global WebSocket. */
const OPEN = 1;

/**
 * Classifies one text frame from the server.
 *
 * The first frame of a socket is this session's USER. Later frames carry a
 * "type" key, except MESSAGE frames, which are recognised by their integer id.
 *
 * @param {string} text frame payload
 * @param {boolean} isFirst whether this is the first frame on this socket
 * @returns {{kind: string} & object} kind is one of "user", "message", "presence",
 *   "joined", "left", "gap", "error" or "unknown"
 */
export function parseFrame(text, isFirst) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    return { kind: "unknown", text };
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    return { kind: "unknown", text };
  }

  if (isFirst && !("type" in data)) {
    return { kind: "user", user: data };
  }
  switch (data.type) {
    case undefined:
      return Number.isInteger(data.id) ? { kind: "message", message: data } : { kind: "unknown", text };
    case "presence":
      return { kind: "presence", users: Array.isArray(data.users) ? data.users : [] };
    case "joined":
    case "left":
      return { kind: data.type, user: data.user };
    case "gap":
      return { kind: "gap", firstMissing: data.first_missing, lastMissing: data.last_missing };
    case "error":
      return { kind: "error", code: data.code, error: data.error };
    default:
      return { kind: "unknown", text };
  }
}

/**
 * Builds the /join URL, with `since` when some message was already seen.
 * The token never goes into the URL: it travels as a websocket subprotocol.
 * @param {string} baseUrl absolute ws: or wss: URL of /join
 * @param {number} lastSeenId id of the newest message seen, 0 for none
 * @returns {string}
 */
export function joinUrl(baseUrl, lastSeenId) {
  if (lastSeenId > 0) {
    const url = new URL(baseUrl);
    url.searchParams.set("since", String(lastSeenId));
    return url.toString();
  }
  return baseUrl;
}

/**
 * One logical connection to the chat that survives dropped sockets.
 *
 * Status changes go to `handlers.onStatus` with an object whose `state` is
 * "connecting", "online", "reconnecting" (with `retryAt`, a Date.now()-style
 * time), "offline" (with `reason`) or "stopped".
 */
export class ChatConnection {
  /**
   * @param {object} options
   * @param {string} options.url absolute ws: or wss: URL of /join
   * @param {string} options.token session token
   * @param {() => number} options.lastSeenId returns the newest message id seen, 0 for none
   * @param {object} options.handlers callbacks: onStatus(status), onReady({user, since}),
   *   onFrame(frame), onSessionEnded(reason)
   * @param {() => Promise<boolean>} [options.checkToken] resolves false when the server rejects
   *   the token; asked after a socket failed before opening, because the browser hides the
   *   HTTP 401 of a rejected upgrade
   * @param {(url: string, protocols: string[]) => WebSocket} [options.createSocket]
   * @param {ReturnType<typeof createBackoff>} [options.backoff]
   * @param {{setTimeout: Function, clearTimeout: Function, now: () => number}} [options.clock]
   */
  constructor(options) {
    this.url = options.url;
    this.token = options.token;
    this.lastSeenId = options.lastSeenId;
    this.handlers = options.handlers;
    this.checkToken = options.checkToken ?? (async () => true);
    this.createSocket = options.createSocket ?? ((url, protocols) => new WebSocket(url, protocols));
    this.backoff = options.backoff ?? createBackoff();
    this.clock = options.clock ?? {
      setTimeout: (callback, ms) => setTimeout(callback, ms),
      clearTimeout: (id) => clearTimeout(id),
      now: () => Date.now(),
    };

    this.socket = null;
    this.ready = false;
    // Stopped until start(), so setNetworkAvailable() before start() opens no socket.
    this.stopped = true;
    this.networkAvailable = true;
    this.retryTimer = null;
    this.stableTimer = null;
    this.status = { state: "stopped" };
  }

  /** Opens the first socket. */
  start() {
    this.stopped = false;
    this.connect();
  }

  /** Closes the socket and cancels any reconnect; used on logout and session end. */
  stop() {
    this.stopped = true;
    this.cancelTimers();
    if (this.socket !== null) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, "client closed");
    }
    this.ready = false;
    this.setStatus({ state: "stopped" });
  }

  /**
   * Sends one message body.
   * @param {string} text
   * @returns {boolean} false when no socket is ready, so the caller keeps the text
   */
  send(text) {
    if (this.socket === null || !this.ready || this.socket.readyState !== OPEN) {
      return false;
    }
    this.socket.send(text);
    return true;
  }

  /** Skips the remaining backoff wait and connects at once (the "Reconnect now" button). */
  reconnectNow() {
    if (this.stopped || this.socket !== null) {
      return;
    }
    this.cancelTimers();
    this.connect();
  }

  /**
   * Tells the connection whether the device has a network, from the browser's
   * online/offline events. Without one, waiting out the backoff is pointless.
   * @param {boolean} available
   */
  setNetworkAvailable(available) {
    this.networkAvailable = available;
    if (this.stopped || this.socket !== null) {
      return;
    }
    if (available) {
      this.reconnectNow();
    } else {
      this.cancelTimers();
      this.setStatus({ state: "offline", reason: "no network" });
    }
  }

  connect() {
    const since = this.lastSeenId();
    const socket = this.createSocket(joinUrl(this.url, since), ["chatroom", `bearer.${this.token}`]);
    this.socket = socket;
    this.ready = false;
    let opened = false;
    let isFirst = true;
    this.setStatus({ state: "connecting" });

    socket.onopen = () => {
      opened = true;
    };
    socket.onmessage = (event) => {
      if (socket !== this.socket || typeof event.data !== "string") {
        return;
      }
      const frame = parseFrame(event.data, isFirst);
      isFirst = false;
      if (frame.kind === "user") {
        this.ready = true;
        this.setStatus({ state: "online" });
        this.stableTimer = this.clock.setTimeout(() => this.backoff.reset(), STABLE_AFTER_MS);
        this.handlers.onReady({ user: frame.user, since: since > 0 ? since : null });
      } else {
        this.handlers.onFrame(frame);
      }
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) {
        return;
      }
      this.socket = null;
      this.ready = false;
      this.cancelTimers();
      void this.handleClose(event.code, event.reason, opened);
    };
  }

  async handleClose(code, reason, opened) {
    if (this.stopped) {
      return;
    }
    if (code === 1008 && SESSION_END_REASONS.has(reason)) {
      this.endSession(reason);
      return;
    }
    if (code === 1008 && FATAL_POLICY_REASONS.has(reason)) {
      this.setStatus({ state: "offline", reason });
      return;
    }
    if (!opened && !(await this.checkToken())) {
      this.endSession("token rejected");
      return;
    }
    // The token check is asynchronous: a logout may have stopped us meanwhile.
    if (this.stopped || this.socket !== null) {
      return;
    }
    if (!this.networkAvailable) {
      this.setStatus({ state: "offline", reason: "no network" });
      return;
    }
    const delay = this.backoff.next();
    this.setStatus({
      state: "reconnecting",
      retryAt: this.clock.now() + delay,
      reason: closeDescription(code, reason),
    });
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  endSession(reason) {
    this.stop();
    this.handlers.onSessionEnded(reason);
  }

  cancelTimers() {
    if (this.retryTimer !== null) {
      this.clock.clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    if (this.stableTimer !== null) {
      this.clock.clearTimeout(this.stableTimer);
      this.stableTimer = null;
    }
  }

  setStatus(status) {
    this.status = status;
    this.handlers.onStatus(status);
  }
}

/**
 * Returns a short English description of a websocket close for the status line.
 * @param {number} code
 * @param {string} reason
 * @returns {string}
 */
export function closeDescription(code, reason) {
  if (reason) {
    return reason;
  }
  switch (code) {
    case 1001:
      return "server shutting down";
    case 1006:
      return "connection lost";
    case 1011:
      return "server error";
    case 1013:
      return "too many connections";
    default:
      return `connection closed (code ${code})`;
  }
}
