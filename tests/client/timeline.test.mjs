// Merging history pages, live frames and replayed frames into one timeline.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Timeline, buildTimelineItems, pageOfId } from "../../client/timeline.js";

const alice = { id: "a1", name: "Alice" };
const bob = { id: "b2", name: "Bob" };

/** Returns the moment `minutes` after 2026-12-04 10:00 UTC. */
function at(minutes) {
  return new Date(Date.UTC(2026, 11, 4, 10, 0) + minutes * 60_000);
}

/** Returns a message with the given id, sent `minutes` after 2026-12-04 10:00 UTC. */
function message(id, user = alice, minutes = id) {
  // The server sends microseconds; Date keeps milliseconds.
  return { id, user, time: at(minutes).toISOString().replace("Z", "123Z"), body: `message ${id}` };
}

function range(first, last, user = alice) {
  const list = [];
  for (let id = first; id <= last; id += 1) {
    list.push(message(id, user));
  }
  return list;
}

const ids = (timeline) => timeline.messages.map((m) => m.id);

/** Day key in UTC, so the tests do not depend on the machine's time zone. */
const utcDay = (date) => date.toISOString().slice(0, 10);

describe("Timeline.addMessages", () => {
  test("pages, live and replayed frames merge without duplicates", () => {
    const timeline = new Timeline();
    // Newest page 2 of a room with 250 messages.
    timeline.addMessages(range(201, 250));
    // Live frames, one of which (250) overlapped the page.
    timeline.addMessages([message(250)]);
    timeline.addMessages([message(251)]);
    timeline.addMessages([message(252)]);
    // Socket dropped after 252; the reconnect with since=252 replays 253..255,
    // and a slow server repeats 252 (must not appear twice).
    timeline.addMessages([message(252), message(253), message(254), message(255)]);
    // Older pages loaded by scrolling up.
    timeline.addMessages(range(101, 200));
    timeline.addMessages(range(1, 100));

    assert.deepEqual(ids(timeline), range(1, 255).map((m) => m.id));
    assert.equal(timeline.byId.size, 255);
  });

  test("returns only the new messages, sorted", () => {
    const timeline = new Timeline();
    timeline.addMessages([message(5), message(3)]);

    const added = timeline.addMessages([message(4), message(5), message(1)]);

    assert.deepEqual(added.map((m) => m.id), [1, 4]);
    assert.deepEqual(ids(timeline), [1, 3, 4, 5]);
  });

  test("out-of-order live batch lands in order", () => {
    const timeline = new Timeline();
    timeline.addMessages(range(1, 3));

    timeline.addMessages([message(6), message(4), message(5)]);

    assert.deepEqual(ids(timeline), [1, 2, 3, 4, 5, 6]);
  });

  test("ignores messages without an integer id", () => {
    const timeline = new Timeline();

    const added = timeline.addMessages([{ id: "7", body: "x" }, { body: "y" }, null, message(2)]);

    assert.deepEqual(added.map((m) => m.id), [2]);
    assert.deepEqual(ids(timeline), [2]);
  });

  test("lastId and firstId", () => {
    const timeline = new Timeline();
    assert.equal(timeline.lastId, 0);
    assert.equal(timeline.firstId, 0);

    timeline.addMessages(range(150, 160));

    assert.equal(timeline.lastId, 160);
    assert.equal(timeline.firstId, 150);
  });
});

describe("Timeline.previousPage", () => {
  test("pageOfId follows the 100-message buckets", () => {
    assert.equal(pageOfId(1), 0);
    assert.equal(pageOfId(100), 0);
    assert.equal(pageOfId(101), 1);
    assert.equal(pageOfId(250), 2);
  });

  test("walks down to page 0, then stops", () => {
    const timeline = new Timeline();
    timeline.addMessages(range(201, 250));
    const requested = [];

    for (let page = timeline.previousPage(); page !== null; page = timeline.previousPage()) {
      requested.push(page);
      timeline.addMessages(range(page * 100 + 1, page * 100 + 100));
    }

    assert.deepEqual(requested, [1, 0]);
    assert.deepEqual(ids(timeline), range(1, 250).map((m) => m.id));
  });

  test("refetches a partly loaded page", () => {
    const timeline = new Timeline();
    // Only the replay after a gap is loaded: 151..160.
    timeline.addMessages(range(151, 160));

    assert.equal(timeline.previousPage(), 1);
  });

  test("empty timeline has no previous page", () => {
    assert.equal(new Timeline().previousPage(), null);
  });
});

describe("Timeline.clear and notices", () => {
  test("clear empties messages and notices", () => {
    const timeline = new Timeline();
    timeline.addMessages(range(1, 3));
    timeline.addNotice("joined", bob, at(30));

    timeline.clear();

    assert.equal(timeline.messages.length, 0);
    assert.equal(timeline.notices.length, 0);
    assert.equal(timeline.previousPage(), null);
    // The same ids can be loaded again after a clear.
    assert.equal(timeline.addMessages(range(1, 3)).length, 3);
  });

  test("notice stays after the message that was newest when it came", () => {
    const timeline = new Timeline();
    timeline.addMessages(range(11, 12));
    timeline.addNotice("joined", bob, at(30));
    timeline.addMessages([message(13)]);
    // An older page loaded later does not move the notice.
    timeline.addMessages(range(1, 10));

    const keys = buildTimelineItems(timeline, { dayKeyOf: utcDay })
      .filter((item) => item.kind !== "day")
      .map((item) => item.key);

    assert.deepEqual(keys.slice(-3), ["message:12", "notice:1", "message:13"]);
  });

  test("keeps only the newest notices", () => {
    const timeline = new Timeline();
    for (let i = 0; i < 60; i += 1) {
      timeline.addNotice("joined", bob, at(30));
    }

    assert.equal(timeline.notices.length, 50);
    assert.equal(timeline.notices[0].seq, 11);
  });
});

describe("buildTimelineItems", () => {
  test("groups consecutive messages of one sender", () => {
    const timeline = new Timeline();
    timeline.addMessages([message(1, alice, 0), message(2, alice, 1), message(3, bob, 2), message(4, alice, 3)]);

    const items = buildTimelineItems(timeline, { selfId: "a1", dayKeyOf: utcDay });
    const messages = items.filter((item) => item.kind === "message");

    assert.deepEqual(
      messages.map((item) => item.groupStart),
      [true, false, true, true],
    );
    assert.deepEqual(
      messages.map((item) => item.own),
      [true, true, false, true],
    );
  });

  test("long pause starts a new group", () => {
    const timeline = new Timeline();
    timeline.addMessages([message(1, alice, 0), message(2, alice, 5), message(3, alice, 11)]);

    const items = buildTimelineItems(timeline, { dayKeyOf: utcDay }).filter((item) => item.kind === "message");

    assert.deepEqual(
      items.map((item) => item.groupStart),
      [true, false, true],
    );
  });

  test("day separator before the first message of each day", () => {
    const timeline = new Timeline();
    // 23:58 and 23:59 on Dec 4, then 00:01 on Dec 5 (UTC), all from Alice.
    const lateMinutes = 13 * 60 + 58;
    timeline.addMessages([message(1, alice, lateMinutes), message(2, alice, lateMinutes + 1)]);
    timeline.addMessages([message(3, alice, lateMinutes + 3)]);

    const items = buildTimelineItems(timeline, { dayKeyOf: utcDay });

    assert.deepEqual(
      items.map((item) => item.key),
      ["day:2026-12-04", "message:1", "message:2", "day:2026-12-05", "message:3"],
    );
    // The separator breaks the group even though the pause is short.
    assert.equal(items[4].groupStart, true);
  });

  test("notice breaks a group", () => {
    const timeline = new Timeline();
    timeline.addMessages([message(1, alice, 0)]);
    timeline.addNotice("left", bob, at(0));
    timeline.addMessages([message(2, alice, 1)]);

    const items = buildTimelineItems(timeline, { dayKeyOf: utcDay });

    assert.deepEqual(
      items.map((item) => item.kind),
      ["day", "message", "notice", "message"],
    );
    assert.equal(items[3].groupStart, true);
  });

  test("notice in an empty room gets its day separator", () => {
    const timeline = new Timeline();
    timeline.addNotice("joined", bob, at(0));
    timeline.addMessages([message(1, alice, 1)]);

    const items = buildTimelineItems(timeline, { dayKeyOf: utcDay });

    assert.deepEqual(
      items.map((item) => item.key),
      ["day:2026-12-04", "notice:1", "message:1"],
    );
  });

  test("skewed notice clock never repeats a day", () => {
    const timeline = new Timeline();
    timeline.addMessages([message(1, alice, 0)]);
    // The client's clock is a day ahead of the server's.
    timeline.addNotice("joined", bob, at(24 * 60));
    timeline.addMessages([message(2, alice, 1)]);

    const keys = buildTimelineItems(timeline, { dayKeyOf: utcDay }).map((item) => item.key);

    assert.deepEqual(keys, ["day:2026-12-04", "message:1", "day:2026-12-05", "notice:1", "message:2"]);
    assert.equal(new Set(keys).size, keys.length);
  });

  test("no selfId marks nothing as own", () => {
    const timeline = new Timeline();
    timeline.addMessages([message(1)]);

    const [item] = buildTimelineItems(timeline, { dayKeyOf: utcDay }).filter((i) => i.kind === "message");

    assert.equal(item.own, false);
  });

  test("keys are unique and stable across rebuilds", () => {
    const timeline = new Timeline();
    timeline.addMessages(range(1, 20));
    timeline.addNotice("joined", bob, at(30));

    const first = buildTimelineItems(timeline, { dayKeyOf: utcDay }).map((item) => item.key);
    timeline.addMessages([message(21)]);
    const second = buildTimelineItems(timeline, { dayKeyOf: utcDay }).map((item) => item.key);

    assert.equal(new Set(second).size, second.length);
    assert.deepEqual(second.slice(0, first.length), first);
  });
});
