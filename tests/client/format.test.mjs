// Composer size check, status line and day labels.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  MAX_BODY_BYTES,
  checkDraft,
  dayLabel,
  offlineReason,
  statusText,
  utf8Length,
} from "../../client/format.js";

test("utf8Length counts bytes, not characters", () => {
  assert.equal(utf8Length("abc"), 3);
  assert.equal(utf8Length("é"), 2);
  assert.equal(utf8Length("€"), 3);
  assert.equal(utf8Length("😀"), 4);
  assert.equal(utf8Length(""), 0);
});

test("checkDraft hides the counter below 80 percent", () => {
  const draft = checkDraft("a".repeat(3276), { connected: true });

  assert.equal(draft.counter, null);
  assert.equal(draft.canSend, true);
  assert.equal(draft.reason, null);
});

test("checkDraft shows the counter past 80 percent", () => {
  const draft = checkDraft("a".repeat(3500), { connected: true });

  assert.equal(draft.counter, "3500 / 4096 bytes");
  assert.equal(draft.canSend, true);
});

test("checkDraft accepts exactly the maximum", () => {
  const draft = checkDraft("a".repeat(MAX_BODY_BYTES), { connected: true });

  assert.equal(draft.canSend, true);
  assert.equal(draft.reason, null);
});

test("checkDraft rejects a body over the maximum in bytes", () => {
  // 1025 emoji are 1025 characters but 4100 bytes.
  const draft = checkDraft("😀".repeat(1025), { connected: true });

  assert.equal(draft.canSend, false);
  assert.equal(draft.bytes, 4100);
  assert.match(draft.reason, /4 bytes too long/);
});

test("checkDraft rejects blank drafts silently", () => {
  for (const text of ["", "   ", "\n\t"]) {
    const draft = checkDraft(text, { connected: true });
    assert.equal(draft.canSend, false, JSON.stringify(text));
    assert.equal(draft.reason, null, JSON.stringify(text));
  }
});

test("checkDraft gives a reason while disconnected", () => {
  const draft = checkDraft("hello", { connected: false, offlineReason: "reconnecting in 3 s" });

  assert.equal(draft.canSend, false);
  assert.match(draft.reason, /reconnecting in 3 s/);
  assert.match(draft.reason, /draft is kept/);
});

test("statusText for each state", () => {
  const now = 1_000_000;

  assert.equal(statusText({ state: "connecting" }, now), "Connecting…");
  assert.equal(statusText({ state: "online" }, now), "Online");
  assert.equal(
    statusText({ state: "reconnecting", retryAt: now + 2100, reason: "connection lost" }, now),
    "Reconnecting in 3 s (connection lost)",
  );
  assert.equal(
    statusText({ state: "reconnecting", retryAt: now - 50, reason: "x" }, now),
    "Reconnecting in 0 s (x)",
  );
  assert.equal(statusText({ state: "offline", reason: "no network" }, now), "Offline: no network");
  assert.equal(statusText({ state: "stopped" }, now), "Not connected");
});

test("offlineReason for each state", () => {
  const now = 1_000_000;

  assert.equal(offlineReason({ state: "connecting" }, now), "connecting");
  assert.equal(offlineReason({ state: "reconnecting", retryAt: now + 4000, reason: "x" }, now), "reconnecting in 4 s");
  assert.equal(offlineReason({ state: "offline", reason: "no network" }, now), "offline (no network)");
  assert.equal(offlineReason({ state: "stopped" }, now), "not connected");
});

test("dayLabel returns Today and Yesterday", () => {
  const now = new Date(2026, 11, 4, 9, 30);

  assert.equal(dayLabel(new Date(2026, 11, 4, 0, 1), now), "Today");
  assert.equal(dayLabel(new Date(2026, 11, 3, 23, 59), now), "Yesterday");
  // Yesterday across a month boundary.
  assert.equal(dayLabel(new Date(2026, 10, 30, 12), new Date(2026, 11, 1, 8)), "Yesterday");
});

test("dayLabel gives the full date for older days", () => {
  const label = dayLabel(new Date(2026, 10, 20, 12), new Date(2026, 11, 4, 9), "en-GB");

  // The punctuation differs between ICU versions, so only the parts are checked.
  for (const part of ["Friday", "20", "November", "2026"]) {
    assert.ok(label.includes(part), `${JSON.stringify(label)} lacks ${part}`);
  }
});
