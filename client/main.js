// Wiring of the chat view: connection, history loading, scrolling and the
// composer. Decisions live in the pure modules (timeline.js, format.js,
// connection.js), the log-in form in login.js; this file connects them.

import { ApiError, fetchHistory, fetchUsers, logout } from "./api.js";
import { ChatConnection } from "./connection.js";
import { MAX_BODY_BYTES, checkDraft, offlineReason, statusText } from "./format.js";
import { renderPresence, renderTimeline } from "./render.js";
import { NAME_KEY, TOKEN_KEY, hideLogin, initLoginForm, showLogin } from "./login.js";
import { Timeline, buildTimelineItems } from "./timeline.js";

/** Distance from the bottom, in pixels, within which the reader counts as "at the bottom". */
const BOTTOM_SLACK_PX = 40;
/** Distance from the top, in pixels, at which the previous page starts loading. */
const TOP_LOAD_PX = 80;

const $ = (id) => document.getElementById(id);
const ui = {
  chatView: $("chat-view"),
  status: $("connection-status"),
  statusAnnouncer: $("connection-announcer"),
  reconnectButton: $("reconnect-button"),
  currentUserName: $("current-user-name"),
  logoutButton: $("logout-button"),
  presenceToggle: $("presence-toggle"),
  presencePanel: $("presence-panel"),
  presenceList: $("presence-list"),
  presenceCount: $("presence-count"),
  presenceCountWide: $("presence-count-wide"),
  scroller: $("scroller"),
  loadOlderButton: $("load-older-button"),
  historyStatus: $("history-status"),
  messageList: $("message-list"),
  newMessagesButton: $("new-messages-button"),
  composer: $("composer"),
  messageInput: $("message-input"),
  sendButton: $("send-button"),
  composerHint: $("composer-hint"),
  composerError: $("composer-error"),
};

/** State of the current session; replaced on every log-in. */
let session = null;
/** Whether the reader was at the bottom at the last scroll; kept so a resize can follow it. */
let followBottom = true;

function newSession(token, name) {
  return {
    token,
    name,
    self: null,
    timeline: new Timeline(),
    presence: new Map(),
    connection: null,
    status: { state: "stopped" },
    statusTicker: null,
    loadingOlder: false,
    historyLoaded: false,
  };
}

// ---------------------------------------------------------------- chat view

function enterChat(token, name) {
  session = newSession(token, name);
  hideLogin();
  ui.chatView.hidden = false;
  ui.currentUserName.textContent = name;
  ui.messageList.replaceChildren();
  ui.composerError.textContent = "";
  ui.historyStatus.textContent = "";
  ui.newMessagesButton.hidden = true;
  renderPresenceList();
  updateHistoryControls();

  const joinUrl = new URL("/join", window.location.href);
  joinUrl.protocol = joinUrl.protocol === "https:" ? "wss:" : "ws:";
  const current = session;
  session.connection = new ChatConnection({
    url: joinUrl.toString(),
    token,
    lastSeenId: () => current.timeline.lastId,
    checkToken: () => isTokenAccepted(token),
    handlers: {
      onStatus: (status) => onStatus(current, status),
      onReady: (ready) => onReady(current, ready),
      onFrame: (frame) => onFrame(current, frame),
      onSessionEnded: (reason) => endSession(current, reason),
    },
  });
  session.connection.setNetworkAvailable(navigator.onLine);
  session.connection.start();
  ui.messageInput.focus();
}

/** Resolves false only on a 401 response; other failures count as accepted. */
async function isTokenAccepted(token) {
  try {
    await fetchUsers(token);
    return true;
  } catch (error) {
    return !(error instanceof ApiError && error.status === 401);
  }
}

/** Leaves the chat for the log-in form, e.g. after logout, token expiry or a 401. */
function endSession(ended, reason) {
  if (session !== ended) {
    return;
  }
  ended.connection?.stop();
  clearInterval(ended.statusTicker);
  session = null;
  sessionStorage.removeItem(TOKEN_KEY);
  const notices = {
    "user logout": "You logged out.",
    "logged out": "You were logged out.",
    "token expired": "Your session expired. Log in again.",
    "token rejected": "Your session is no longer valid. Log in again.",
  };
  ui.chatView.hidden = true;
  showLogin(notices[reason] ?? "");
}

async function onLogoutClick() {
  const ended = session;
  if (ended === null) {
    return;
  }
  // Stop first: the server's 1008 "logged out" close would otherwise end the
  // session with the notice meant for a logout from another tab.
  ended.connection.stop();
  try {
    await logout(ended.token);
  } catch {
    // The token leaves this tab either way, and the server expires it after its lifetime.
  }
  ui.messageInput.value = "";
  endSession(ended, "user logout");
}

function onStatus(current, status) {
  if (session !== current) {
    return;
  }
  if (status.state !== current.status.state) {
    ui.statusAnnouncer.textContent = statusAnnouncement(status);
  }
  current.status = status;
  clearInterval(current.statusTicker);
  current.statusTicker = null;
  // The countdown of "reconnecting in N s" appears in the status line and
  // in the composer's reason, so both are redrawn every second.
  const draw = () => {
    ui.status.textContent = statusText(status, Date.now());
    updateComposer();
  };
  draw();
  if (status.state === "reconnecting") {
    current.statusTicker = setInterval(draw, 1000);
  }
  ui.status.dataset.state = status.state;
  ui.reconnectButton.hidden = !(status.state === "reconnecting" || status.state === "offline");
}

/** Returns the sentence screen readers hear when the connection state changes. */
function statusAnnouncement(status) {
  switch (status.state) {
    case "online":
      return "Connected.";
    case "reconnecting":
      return `Connection lost (${status.reason}). Reconnecting automatically.`;
    case "offline":
      return `Offline: ${status.reason}.`;
    default:
      return "";
  }
}

function onReady(current, { user, since }) {
  if (session !== current) {
    return;
  }
  current.self = user;
  renderMessages({ scroll: "keep" });
  renderPresenceList();
  // Without `since`, older messages exist only in /history. The server
  // subscribes the socket before it sends `user`, so no message falls between
  // that page and the live frames. A socket that dropped before the first
  // page arrived needs the page as well.
  if (since === null || !current.historyLoaded) {
    void loadNewestPage(current);
  }
}

function onFrame(current, frame) {
  if (session !== current) {
    return;
  }
  switch (frame.kind) {
    case "message": {
      const wasAtBottom = isAtBottom();
      const added = current.timeline.addMessages([frame.message]);
      if (added.length === 0) {
        return;
      }
      const own = current.self !== null && frame.message.user?.id === current.self.id;
      renderMessages({ scroll: wasAtBottom || own ? "bottom" : "keep" });
      if (!wasAtBottom && !own) {
        ui.newMessagesButton.hidden = false;
      }
      return;
    }
    case "presence":
      current.presence = new Map(frame.users.map((user) => [user.id, user]));
      renderPresenceList();
      return;
    case "joined":
    case "left": {
      // A frame that changes nothing gets no notice: the server also sends
      // our own "joined" right after a presence list that already has us.
      const known = current.presence.has(frame.user?.id);
      if (frame.kind === "joined" ? known : !known) {
        return;
      }
      if (frame.kind === "joined") {
        current.presence.set(frame.user.id, frame.user);
      } else {
        current.presence.delete(frame.user.id);
      }
      renderPresenceList();
      const wasAtBottom = isAtBottom();
      current.timeline.addNotice(frame.kind, frame.user, new Date());
      renderMessages({ scroll: wasAtBottom ? "bottom" : "keep" });
      return;
    }
    case "gap":
      // More was missed than the server replays: start over from the newest
      // page; the replayed frames that follow merge into it by id.
      current.timeline.clear();
      current.historyLoaded = false;
      renderMessages({ scroll: "bottom" });
      void loadNewestPage(current);
      return;
    case "error":
      ui.composerError.textContent = String(frame.error ?? frame.code ?? "The server rejected the message.");
      return;
    default:
      return;
  }
}

// ---------------------------------------------------------------- history

async function loadNewestPage(current) {
  ui.historyStatus.textContent = "Loading messages…";
  let page;
  try {
    page = await fetchHistory(current.token);
  } catch (error) {
    handleHistoryError(current, error);
    return;
  }
  if (session !== current) {
    return;
  }
  const wasAtBottom = isAtBottom() || !current.historyLoaded;
  current.timeline.addMessages(page.messages);
  current.historyLoaded = true;
  ui.historyStatus.textContent = "";
  renderMessages({ scroll: wasAtBottom ? "bottom" : "keep" });
  void fillViewport(current);
}

/** Loads the page before the oldest loaded message, keeping the reading position. */
async function loadOlderPage(current) {
  const page = current.timeline.previousPage();
  if (current.loadingOlder || !current.historyLoaded || page === null) {
    return;
  }
  current.loadingOlder = true;
  ui.historyStatus.textContent = "Loading older messages…";
  ui.messageList.setAttribute("aria-busy", "true");
  let result;
  try {
    result = await fetchHistory(current.token, page);
  } catch (error) {
    // No automatic retry: the button and the next scroll to the top retry.
    handleHistoryError(current, error);
    return;
  } finally {
    current.loadingOlder = false;
    ui.messageList.removeAttribute("aria-busy");
  }
  if (session !== current) {
    return;
  }

  // Keep the distance from the content's bottom, so the message the reader
  // was looking at stays in place while older ones are inserted above it.
  const fromBottom = ui.scroller.scrollHeight - ui.scroller.scrollTop;
  ui.historyStatus.textContent = "";
  current.timeline.addMessages(result.messages);
  renderMessages({ scroll: "keep" });
  ui.scroller.scrollTop = ui.scroller.scrollHeight - fromBottom;
  void fillViewport(current);
}

/** Loads older pages while the messages do not fill the scroller, since no scroll event can come. */
async function fillViewport(current) {
  if (session !== current || current.loadingOlder) {
    return;
  }
  if (ui.scroller.scrollHeight <= ui.scroller.clientHeight + TOP_LOAD_PX) {
    await loadOlderPage(current);
  }
}

function handleHistoryError(current, error) {
  if (session !== current) {
    return;
  }
  if (error instanceof ApiError && error.status === 401) {
    endSession(current, "token rejected");
    return;
  }
  ui.historyStatus.textContent = `Could not load messages: ${error.message}`;
}

function updateHistoryControls() {
  const current = session;
  const hasOlder = current !== null && current.historyLoaded && current.timeline.previousPage() !== null;
  ui.loadOlderButton.hidden = !hasOlder;
  if (current !== null && current.historyLoaded && !hasOlder && ui.historyStatus.textContent === "") {
    ui.historyStatus.textContent =
      current.timeline.messages.length > 0 ? "Beginning of the conversation" : "No messages yet. Say hello!";
  } else if (hasOlder && ui.historyStatus.textContent.startsWith("Beginning")) {
    ui.historyStatus.textContent = "";
  }
}

// ---------------------------------------------------------------- rendering

function isAtBottom() {
  const { scrollHeight, scrollTop, clientHeight } = ui.scroller;
  return scrollHeight - scrollTop - clientHeight <= BOTTOM_SLACK_PX;
}

function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
  ui.newMessagesButton.hidden = true;
  followBottom = true;
}

/**
 * Redraws the message list.
 * @param {{scroll: "bottom"|"keep"}} options "bottom" follows the newest message
 */
function renderMessages({ scroll }) {
  const current = session;
  const items = buildTimelineItems(current.timeline, { selfId: current.self?.id ?? null });
  renderTimeline(ui.messageList, items, new Date());
  updateHistoryControls();
  if (scroll === "bottom") {
    scrollToBottom();
  }
}

function renderPresenceList() {
  const users = session === null ? [] : [...session.presence.values()];
  renderPresence(ui.presenceList, users, session?.self?.id ?? null);
  ui.presenceCount.textContent = String(users.length);
  ui.presenceCountWide.textContent = String(users.length);
}

// ---------------------------------------------------------------- composer

function updateComposer() {
  const status = session?.status ?? { state: "stopped" };
  const draft = checkDraft(ui.messageInput.value, {
    connected: status.state === "online",
    offlineReason: offlineReason(status, Date.now()),
  });
  ui.sendButton.disabled = !draft.canSend;
  ui.composerHint.textContent = [draft.reason, draft.counter].filter(Boolean).join(" ");
  ui.composer.classList.toggle("over-limit", draft.bytes > MAX_BODY_BYTES);
}

function sendDraft() {
  const current = session;
  if (current === null) {
    return;
  }
  const text = ui.messageInput.value;
  const draft = checkDraft(text, { connected: current.status.state === "online" });
  if (!draft.canSend) {
    updateComposer();
    return;
  }
  if (current.connection.send(text)) {
    ui.messageInput.value = "";
    ui.composerError.textContent = "";
    updateComposer();
  }
}

function onComposerKeydown(event) {
  // isComposing: Enter also confirms an input-method candidate (Japanese,
  // Chinese, ...), which must not send the half-typed message.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendDraft();
  }
}

// ---------------------------------------------------------------- events

function onScroll() {
  const current = session;
  if (current === null) {
    return;
  }
  followBottom = isAtBottom();
  if (followBottom) {
    ui.newMessagesButton.hidden = true;
  }
  if (ui.scroller.scrollTop <= TOP_LOAD_PX) {
    void loadOlderPage(current);
  }
}

function togglePresence() {
  const expanded = ui.presenceToggle.getAttribute("aria-expanded") === "true";
  ui.presenceToggle.setAttribute("aria-expanded", String(!expanded));
  ui.presencePanel.classList.toggle("expanded", !expanded);
}

initLoginForm((token, name) => {
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.setItem(NAME_KEY, name);
  enterChat(token, name);
});
ui.logoutButton.addEventListener("click", onLogoutClick);
ui.reconnectButton.addEventListener("click", () => session?.connection.reconnectNow());
ui.presenceToggle.addEventListener("click", togglePresence);
ui.scroller.addEventListener("scroll", onScroll, { passive: true });
ui.loadOlderButton.addEventListener("click", () => session && void loadOlderPage(session));
ui.newMessagesButton.addEventListener("click", () => {
  scrollToBottom();
  ui.messageInput.focus();
});
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  sendDraft();
});
ui.messageInput.addEventListener("keydown", onComposerKeydown);
ui.messageInput.addEventListener("input", updateComposer);
// When the scroller shrinks (presence list opened, textarea grown, phone
// keyboard shown), a reader who was at the bottom stays there.
new ResizeObserver(() => {
  if (session !== null && followBottom) {
    scrollToBottom();
  }
}).observe(ui.scroller);
window.addEventListener("online", () => session?.connection.setNetworkAvailable(true));
window.addEventListener("offline", () => session?.connection.setNetworkAvailable(false));

// A reload keeps the session: sessionStorage lives as long as the tab.
const savedToken = sessionStorage.getItem(TOKEN_KEY);
if (savedToken) {
  enterChat(savedToken, sessionStorage.getItem(NAME_KEY) ?? "");
} else {
  showLogin();
}
