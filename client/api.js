// HTTP calls to the chatroom server. Every function rejects with an ApiError,
// so callers handle one error type whatever failed (network, status, JSON).
// Uses only the global `fetch`, so Node tests can replace it with a fake.

/** Failed request: `status` is the HTTP status, or 0 when the server could not be reached. */
export class ApiError extends Error {
  /**
   * @param {string} message sentence to show the user
   * @param {number} status HTTP status, 0 for a network failure
   * @param {number|null} [retryAfterSeconds] from the Retry-After header of a 429 response
   */
  constructor(message, status, retryAfterSeconds = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/**
 * Sends a request and returns the parsed JSON body of a 2xx response.
 * @param {string} path
 * @param {RequestInit} init
 * @returns {Promise<any>}
 */
async function requestJson(path, init) {
  let response;
  try {
    response = await fetch(path, { cache: "no-store", ...init });
  } catch (error) {
    throw new ApiError(`The server could not be reached (${error.message}).`, 0);
  }

  let body = null;
  try {
    body = await response.json();
  } catch {
    // A proxy error page or an empty body is not JSON, so the status alone describes the failure.
  }

  if (!response.ok) {
    const serverText = typeof body?.error === "string" ? body.error : `HTTP ${response.status}`;
    throw new ApiError(serverText, response.status, parseRetryAfter(response.headers.get("Retry-After")));
  }
  if (body === null) {
    throw new ApiError(`The server sent an invalid response to ${path}.`, response.status);
  }
  return body;
}

/**
 * Returns Retry-After as whole seconds, or null when it is missing.
 * Accepts both forms of the header: delay in seconds and an HTTP date.
 * @param {string|null} value
 * @returns {number|null}
 */
export function parseRetryAfter(value) {
  if (value === null || value.trim() === "") {
    return null;
  }
  if (/^\s*\d+\s*$/.test(value)) {
    return Number.parseInt(value, 10);
  }
  const date = Date.parse(value);
  if (Number.isNaN(date)) {
    return null;
  }
  return Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

function bearer(token) {
  return { Authorization: `Bearer ${token}` };
}

/**
 * Logs in and returns the session token.
 * @param {string} user display name as typed; the server trims and validates it
 * @param {string} password
 * @returns {Promise<string>} 64 hex digits
 */
export async function login(user, password) {
  const body = await requestJson("/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, password }),
  });
  if (typeof body.token !== "string") {
    throw new ApiError("The server sent no token.", 200);
  }
  return body.token;
}

/**
 * Fetches one page of history, oldest message first.
 * @param {string} token
 * @param {number|null} page page number, or null for the newest page
 * @returns {Promise<{page: number, messages: Array<object>}>}
 */
export async function fetchHistory(token, page = null) {
  const query = page === null ? "" : `?page=${encodeURIComponent(page)}`;
  const body = await requestJson(`/history${query}`, { headers: bearer(token) });
  if (!Array.isArray(body.messages)) {
    throw new ApiError("The server sent a history page without messages.", 200);
  }
  return body;
}

/**
 * Fetches the users who are online.
 * @param {string} token
 * @returns {Promise<Array<{id: string, name: string}>>}
 */
export async function fetchUsers(token) {
  const body = await requestJson("/users", { headers: bearer(token) });
  return Array.isArray(body.users) ? body.users : [];
}

/**
 * Ends the session on the server, which also closes its websockets.
 * @param {string} token
 * @returns {Promise<void>}
 */
export async function logout(token) {
  await requestJson("/logout", { headers: bearer(token) });
}
