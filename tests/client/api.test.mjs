// HTTP wrappers with a fake fetch: request shape and error mapping.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { ApiError, fetchHistory, login, logout, parseRetryAfter } from "../../client/api.js";

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

/** Installs a fake fetch that records requests and returns `response`. */
function fakeFetch(status, body, headers = {}) {
  const requests = [];
  globalThis.fetch = async (url, init) => {
    requests.push({ url, init });
    return new Response(body === undefined ? "" : JSON.stringify(body), { status, headers });
  };
  return requests;
}

test("login posts JSON and returns the token", async () => {
  const requests = fakeFetch(200, { token: "f".repeat(64) });

  const token = await login("Alice", "secret");

  assert.equal(token, "f".repeat(64));
  assert.equal(requests[0].url, "/login");
  assert.equal(requests[0].init.method, "POST");
  assert.deepEqual(JSON.parse(requests[0].init.body), { user: "Alice", password: "secret" });
});

test("login 401 keeps the status", async () => {
  fakeFetch(401, { error: "Wrong password." });

  await assert.rejects(login("Alice", "nope"), (error) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 401);
    return true;
  });
});

test("login 400 carries the server's sentence", async () => {
  fakeFetch(400, { error: "The name must be at most 32 characters." });

  await assert.rejects(login("x".repeat(40), "pw"), {
    status: 400,
    message: "The name must be at most 32 characters.",
  });
});

test("login 429 carries Retry-After", async () => {
  fakeFetch(429, { error: "Too many failed logins." }, { "Retry-After": "17" });

  await assert.rejects(login("Alice", "pw"), { status: 429, retryAfterSeconds: 17 });
});

test("network failure is status 0", async () => {
  globalThis.fetch = async () => {
    throw new TypeError("fetch failed");
  };

  await assert.rejects(login("Alice", "pw"), { status: 0 });
});

test("non-JSON error body falls back to the status", async () => {
  globalThis.fetch = async () => new Response("<html>Bad gateway</html>", { status: 502 });

  await assert.rejects(login("Alice", "pw"), { status: 502, message: "HTTP 502" });
});

test("fetchHistory sends the bearer token and page", async () => {
  const requests = fakeFetch(200, { page: 1, messages: [] });

  await fetchHistory("t0k", 1);
  await fetchHistory("t0k");

  assert.equal(requests[0].url, "/history?page=1");
  assert.equal(requests[0].init.headers.Authorization, "Bearer t0k");
  assert.equal(requests[1].url, "/history");
});

test("fetchHistory 401", async () => {
  fakeFetch(401, { error: "Invalid token." });

  await assert.rejects(fetchHistory("bad"), { status: 401 });
});

test("logout sends the bearer token", async () => {
  const requests = fakeFetch(200, { status: "logged out" });

  await logout("t0k");

  assert.equal(requests[0].url, "/logout");
  assert.equal(requests[0].init.headers.Authorization, "Bearer t0k");
});

test("parseRetryAfter accepts seconds and dates", () => {
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter(""), null);
  assert.equal(parseRetryAfter("30"), 30);
  assert.equal(parseRetryAfter("garbage"), null);
  assert.equal(parseRetryAfter(new Date(Date.now() - 5000).toUTCString()), 0);
  const future = parseRetryAfter(new Date(Date.now() + 60_000).toUTCString());
  // The HTTP date has whole seconds, so up to 2 s of the minute are lost.
  assert.ok(future >= 58, String(future));
  assert.ok(future <= 60, String(future));
});
