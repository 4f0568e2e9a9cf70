// Pure text decisions for the UI: day labels, times, the connection status
// line and the composer's size check. No DOM and no `window`, so Node tests
// import this module directly.

import { localDayKey } from "./timeline.js";

/** Default maximum message body the server accepts, in bytes of UTF-8. */
export const MAX_BODY_BYTES = 4096;

/** The byte counter appears once a draft is larger than this share of the maximum. */
export const COUNTER_THRESHOLD = 0.8;

const encoder = new TextEncoder();

/**
 * Returns the size of a string in bytes of UTF-8, the unit of the server's limit.
 * @param {string} text
 * @returns {number}
 */
export function utf8Length(text) {
  return encoder.encode(text).length;
}

/**
 * Decides whether a draft can be sent and what the composer shows about it.
 * @param {string} text draft as typed
 * @param {object} options
 * @param {boolean} options.connected whether the socket is ready to send
 * @param {string} [options.offlineReason] shown when not connected
 * @param {number} [options.maxBytes]
 * @returns {{canSend: boolean, bytes: number, counter: string|null, reason: string|null}}
 *   `counter` is null below the threshold, and `reason` explains why sending is disabled
 */
export function checkDraft(text, options) {
  const maxBytes = options.maxBytes ?? MAX_BODY_BYTES;
  const bytes = utf8Length(text);
  const counter = bytes > maxBytes * COUNTER_THRESHOLD ? `${bytes} / ${maxBytes} bytes` : null;

  let reason = null;
  if (!options.connected) {
    reason = `Sending is disabled: ${options.offlineReason ?? "not connected"}. Your draft is kept.`;
  } else if (bytes > maxBytes) {
    reason = `The message is ${bytes - maxBytes} bytes too long.`;
  }
  const canSend = reason === null && text.trim() !== "";
  return { canSend, bytes, counter, reason };
}

/**
 * Returns the label of a day separator: "Today", "Yesterday" or a full date.
 * @param {Date} time any moment of that day
 * @param {Date} now
 * @param {string} [locale] BCP 47 tag; the runtime's default when omitted
 * @returns {string}
 */
export function dayLabel(time, now, locale = undefined) {
  const dayKey = localDayKey(time);
  if (dayKey === localDayKey(now)) {
    return "Today";
  }
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (dayKey === localDayKey(yesterday)) {
    return "Yesterday";
  }
  return time.toLocaleDateString(locale, {
    weekday: "long",
    year: "numeric",
    month: "long",
    day: "numeric",
  });
}

/**
 * Returns the local time of day of a message, e.g. "20:15" or "8:15 PM".
 * @param {Date} time
 * @param {string} [locale]
 * @returns {string}
 */
export function formatTime(time, locale = undefined) {
  return time.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit" });
}

/**
 * Returns the text of the connection status line.
 * @param {{state: string, retryAt?: number, reason?: string}} status from ChatConnection
 * @param {number} now milliseconds, as Date.now()
 * @returns {string}
 */
export function statusText(status, now) {
  switch (status.state) {
    case "connecting":
      return "Connecting…";
    case "online":
      return "Online";
    case "reconnecting": {
      const seconds = Math.max(0, Math.ceil((status.retryAt - now) / 1000));
      return `Reconnecting in ${seconds} s (${status.reason})`;
    }
    case "offline":
      return `Offline: ${status.reason}`;
    default:
      return "Not connected";
  }
}

/**
 * Returns why messages cannot be sent in a connection state, for the composer.
 * @param {{state: string, retryAt?: number, reason?: string}} status from ChatConnection
 * @param {number} now milliseconds, as Date.now()
 * @returns {string} a lower-case phrase, e.g. "reconnecting in 3 s"
 */
export function offlineReason(status, now) {
  switch (status.state) {
    case "connecting":
      return "connecting";
    case "reconnecting": {
      const seconds = Math.max(0, Math.ceil((status.retryAt - now) / 1000));
      return `reconnecting in ${seconds} s`;
    }
    case "offline":
      return `offline (${status.reason})`;
    default:
      return "not connected";
  }
}
