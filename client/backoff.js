// Reconnect delays: exponential backoff with jitter, bounded, resettable.
// Pure logic (no DOM, no timers), so the Node test runner imports it directly.

/**
 * Creates a backoff schedule.
 *
 * Attempt n (counting from 0) waits a random time between cap * (1 - jitter)
 * and cap, where cap = min(maxMs, baseMs * factor ** n).
 * The jitter spreads the reconnects of many clients after a server restart
 * so they do not all arrive in the same instant.
 *
 * @param {object} [options]
 * @param {number} [options.baseMs] delay cap of the first attempt, in milliseconds
 * @param {number} [options.maxMs] upper bound of every delay, in milliseconds
 * @param {number} [options.factor] growth of the cap per attempt
 * @param {number} [options.jitter] fraction of the cap that is randomised, 0 to 1
 * @param {() => number} [options.random] source of numbers in [0, 1), Math.random by default
 * @returns {{next: () => number, reset: () => void, attempt: number}}
 */
export function createBackoff(options = {}) {
  const baseMs = options.baseMs ?? 1000;
  const maxMs = options.maxMs ?? 30000;
  const factor = options.factor ?? 2;
  const jitter = options.jitter ?? 0.5;
  const random = options.random ?? Math.random;

  if (!(baseMs > 0 && maxMs >= baseMs && factor >= 1 && jitter >= 0 && jitter <= 1)) {
    throw new RangeError(
      `invalid backoff options: baseMs=${baseMs}, maxMs=${maxMs}, factor=${factor}, jitter=${jitter}`,
    );
  }

  return {
    attempt: 0,

    /** Returns the delay before the next attempt, in milliseconds, and counts the attempt. */
    next() {
      const cap = Math.min(maxMs, baseMs * factor ** this.attempt);
      this.attempt += 1;
      return Math.round(cap * (1 - jitter * random()));
    },

    /** Starts the schedule again from the first attempt, after a connection proved stable. */
    reset() {
      this.attempt = 0;
    },
  };
}
