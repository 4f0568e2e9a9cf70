// Pure timeline logic: which messages are loaded, in what order, and how they
// are grouped for display. Nothing here touches the DOM or `window`, so the
// Node test runner imports this module directly.

/** Number of messages in one history page (bucket): page N contains ids 100*N+1 .. 100*N+100. */
export const PAGE_SIZE = 100;

/** Consecutive messages of one sender further apart than this start a new group. */
export const GROUP_GAP_MS = 5 * 60 * 1000;

/** Join/leave notices kept in the timeline; older ones are dropped so a busy room stays light. */
export const MAX_NOTICES = 50;

/**
 * Returns the history page number that contains a message id.
 * @param {number} id message id, 1 or more
 * @returns {number}
 */
export function pageOfId(id) {
  return Math.floor((id - 1) / PAGE_SIZE);
}

/**
 * Returns the local calendar day of a date as "YYYY-MM-DD".
 * Uses the runtime's local time zone, which is the reader's in a browser.
 * @param {Date} date
 * @returns {string}
 */
export function localDayKey(date) {
  const month = String(date.getMonth() + 1).padStart(2, "0");
  const day = String(date.getDate()).padStart(2, "0");
  return `${date.getFullYear()}-${month}-${day}`;
}

/**
 * Ordered, duplicate-free set of messages plus join/leave notices.
 *
 * Messages arrive from three sources that overlap: history pages, live
 * websocket frames and frames replayed after a reconnect with `since=`.
 * The server's ids are unique and increasing, so the id alone decides both
 * identity and order.
 */
export class Timeline {
  constructor() {
    /** @type {Array<object>} messages sorted by id, ascending */
    this.messages = [];
    /** @type {Map<number, object>} */
    this.byId = new Map();
    /** @type {Array<{seq: number, afterId: number, kind: string, user: object, time: Date}>} */
    this.notices = [];
    this.nextNoticeSeq = 1;
  }

  /** Id of the newest loaded message, or 0 when nothing is loaded. */
  get lastId() {
    return this.messages.length > 0 ? this.messages[this.messages.length - 1].id : 0;
  }

  /** Id of the oldest loaded message, or 0 when nothing is loaded. */
  get firstId() {
    return this.messages.length > 0 ? this.messages[0].id : 0;
  }

  /**
   * Adds messages that are not loaded yet and keeps the list sorted by id.
   * Messages without an integer id are ignored because they cannot be placed.
   * @param {Array<object>} incoming messages in any order, possibly already loaded
   * @returns {Array<object>} the messages that were new, sorted by id
   */
  addMessages(incoming) {
    const added = [];
    for (const message of incoming) {
      if (!Number.isInteger(message?.id) || this.byId.has(message.id)) {
        continue;
      }
      this.byId.set(message.id, message);
      added.push(message);
    }
    if (added.length === 0) {
      return added;
    }
    added.sort((a, b) => a.id - b.id);

    // Live messages only ever append; sorting the whole list is needed only
    // when an older page or an out-of-order batch lands in the middle.
    if (added[0].id > this.lastId) {
      this.messages.push(...added);
    } else {
      this.messages.push(...added);
      this.messages.sort((a, b) => a.id - b.id);
    }
    return added;
  }

  /**
   * Records a "joined" or "left" notice after the newest loaded message.
   * @param {"joined"|"left"} kind
   * @param {{id: string, name: string}} user
   * @param {Date} time when the client received the notice
   * @returns {object} the stored notice
   */
  addNotice(kind, user, time) {
    const notice = { seq: this.nextNoticeSeq, afterId: this.lastId, kind, user, time };
    this.nextNoticeSeq += 1;
    this.notices.push(notice);
    if (this.notices.length > MAX_NOTICES) {
      this.notices.splice(0, this.notices.length - MAX_NOTICES);
    }
    return notice;
  }

  /**
   * Returns the page to request when the reader scrolls to the top, or null
   * when message 1 is loaded (or nothing is) so there is nothing older.
   * Derived from the oldest loaded id, so a partly loaded page is fetched
   * again and its duplicates are dropped by `addMessages`.
   * @returns {number|null}
   */
  previousPage() {
    if (this.firstId <= 1) {
      return null;
    }
    return pageOfId(this.firstId - 1);
  }

  /** Removes every message and notice, e.g. before reloading after a `gap` frame. */
  clear() {
    this.messages = [];
    this.byId.clear();
    this.notices = [];
  }
}

/**
 * Builds the display list: day separators, messages with grouping decisions
 * and notices, each with a stable `key` so the renderer can reuse DOM nodes.
 *
 * A message starts a new group unless the item before it is a message of the
 * same user (by user id), on the same day, sent at most `groupGapMs` earlier.
 *
 * @param {Timeline} timeline
 * @param {object} [options]
 * @param {string|null} [options.selfId] user id of this session; its messages get `own: true`
 * @param {(date: Date) => string} [options.dayKeyOf] calendar day of a date, local by default
 * @param {number} [options.groupGapMs]
 * @returns {Array<object>} items of kind "day", "message" or "notice"
 */
export function buildTimelineItems(timeline, options = {}) {
  const selfId = options.selfId ?? null;
  const dayKeyOf = options.dayKeyOf ?? localDayKey;
  const groupGapMs = options.groupGapMs ?? GROUP_GAP_MS;

  const notices = [...timeline.notices].sort((a, b) => a.afterId - b.afterId || a.seq - b.seq);
  let noticeIndex = 0;
  const items = [];
  let previous = null;
  let previousDay = "";

  // Day separators only move forward: notice times come from the client's
  // clock and message times from the server's, so a skewed clock near
  // midnight must not repeat a day (and its key).
  const addDaySeparator = (time) => {
    const day = dayKeyOf(time);
    if (day > previousDay) {
      items.push({ key: `day:${day}`, kind: "day", day, time });
      previousDay = day;
      previous = null;
    }
  };
  const addNotice = (notice) => {
    addDaySeparator(notice.time);
    items.push({ key: `notice:${notice.seq}`, kind: "notice", notice });
    previous = null;
  };

  for (const message of timeline.messages) {
    // A notice recorded after message X belongs between X and the next message.
    while (noticeIndex < notices.length && notices[noticeIndex].afterId < message.id) {
      addNotice(notices[noticeIndex]);
      noticeIndex += 1;
    }

    const time = new Date(message.time);
    addDaySeparator(time);
    const sameSender =
      previous !== null &&
      previous.message.user?.id === message.user?.id &&
      time.getTime() - previous.time.getTime() <= groupGapMs;
    const item = {
      key: `message:${message.id}`,
      kind: "message",
      message,
      time,
      own: selfId !== null && message.user?.id === selfId,
      groupStart: !sameSender,
    };
    items.push(item);
    previous = item;
  }

  while (noticeIndex < notices.length) {
    addNotice(notices[noticeIndex]);
    noticeIndex += 1;
  }
  return items;
}
