// Reconnect delay schedule: grows, stays bounded, jitters within range, resets.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createBackoff } from "../../client/backoff.js";

/** Returns a deterministic random source that repeats `values`. */
function sequence(...values) {
  let index = 0;
  return () => values[index++ % values.length];
}

test("backoff doubles until the maximum", () => {
  const backoff = createBackoff({ baseMs: 1000, maxMs: 30000, jitter: 0.5, random: () => 0 });

  const delays = Array.from({ length: 8 }, () => backoff.next());

  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
});

test("backoff stays bounded after many attempts", () => {
  const backoff = createBackoff({ baseMs: 500, maxMs: 10000, random: () => 0 });

  for (let i = 0; i < 2000; i += 1) {
    const delay = backoff.next();
    assert.ok(Number.isFinite(delay), `attempt ${i}: delay ${delay} is not finite`);
    assert.ok(delay <= 10000, `attempt ${i}: delay ${delay} exceeds the maximum`);
  }
});

test("backoff jitter stays within range", () => {
  const random = sequence(0, 0.25, 0.5, 0.999999);
  const backoff = createBackoff({ baseMs: 1000, maxMs: 1000, jitter: 0.5, random });

  const delays = Array.from({ length: 4 }, () => backoff.next());

  assert.deepEqual(delays, [1000, 875, 750, 500]);
});

test("backoff jitter with Math.random", () => {
  const backoff = createBackoff({ baseMs: 1000, maxMs: 8000, jitter: 0.5 });

  for (let attempt = 0; attempt < 200; attempt += 1) {
    const cap = Math.min(8000, 1000 * 2 ** attempt);
    const delay = backoff.next();
    assert.ok(delay >= cap / 2, `attempt ${attempt}: ${delay} < ${cap / 2}`);
    assert.ok(delay <= cap, `attempt ${attempt}: ${delay} > ${cap}`);
  }
});

test("backoff jitter varies the delays", () => {
  const backoff = createBackoff({ baseMs: 1000, maxMs: 1000 });

  const delays = new Set(Array.from({ length: 50 }, () => backoff.next()));

  assert.ok(delays.size > 1, "50 delays with jitter were all equal");
});

test("backoff reset starts over", () => {
  const backoff = createBackoff({ baseMs: 1000, maxMs: 30000, random: () => 0 });
  backoff.next();
  backoff.next();
  backoff.next();

  backoff.reset();

  assert.equal(backoff.attempt, 0);
  assert.equal(backoff.next(), 1000);
  assert.equal(backoff.next(), 2000);
});

test("backoff rejects invalid options", () => {
  assert.throws(() => createBackoff({ baseMs: 0 }), RangeError);
  assert.throws(() => createBackoff({ baseMs: 2000, maxMs: 1000 }), RangeError);
  assert.throws(() => createBackoff({ jitter: 1.5 }), RangeError);
  assert.throws(() => createBackoff({ factor: 0.5 }), RangeError);
});
