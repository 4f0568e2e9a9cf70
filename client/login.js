// The log-in form: posts /login, shows failures inline next to the form
// (never in a dialog) and hands the token to the chat view.

import { ApiError, login } from "./api.js";

/** sessionStorage key of the token; the tab keeps it across reloads and drops it when closed. */
export const TOKEN_KEY = "chatroom.token";
/** sessionStorage key of the display name of the last log-in. */
export const NAME_KEY = "chatroom.name";

const $ = (id) => document.getElementById(id);
const ui = {
  loginView: $("login-view"),
  loginForm: $("login-form"),
  loginName: $("login-name"),
  loginPassword: $("login-password"),
  loginButton: $("login-button"),
  loginError: $("login-error"),
  loginNotice: $("login-notice"),
};

let loginRetryTimer = null;

/**
 * Handles submits of the log-in form.
 * @param {(token: string, name: string) => void} onLoggedIn called with the token and trimmed name
 */
export function initLoginForm(onLoggedIn) {
  ui.loginForm.addEventListener("submit", (event) => onLoginSubmit(event, onLoggedIn));
  // An error about the last attempt is stale once the user edits the form, even
  // when the browser's own validation then stops the next submit.
  for (const input of [ui.loginName, ui.loginPassword]) {
    input.addEventListener("input", () => {
      if (!ui.loginButton.disabled) ui.loginError.textContent = "";
    });
  }
}

/** Hides the log-in form when the chat view takes over. */
export function hideLogin() {
  ui.loginView.hidden = true;
}

/**
 * Shows the log-in form with an optional notice, e.g. why the session ended.
 * The name of the last session is filled in, so only the password is needed.
 * @param {string} [notice]
 */
export function showLogin(notice = "") {
  ui.loginView.hidden = false;
  ui.loginNotice.textContent = notice;
  ui.loginError.textContent = "";
  ui.loginPassword.value = "";
  ui.loginName.value = sessionStorage.getItem(NAME_KEY) ?? ui.loginName.value;
  (ui.loginName.value ? ui.loginPassword : ui.loginName).focus();
}

/** Returns the sentence the log-in form shows for a failed log-in. */
function loginErrorText(error) {
  if (!(error instanceof ApiError)) {
    return `Log-in failed: ${error.message}`;
  }
  switch (error.status) {
    case 0:
      return "The server could not be reached. Check your connection and try again.";
    case 400:
      return error.message;
    case 401:
      return "Wrong password. Try again.";
    case 429:
      return error.retryAfterSeconds === null
        ? "Too many failed log-ins. Wait a moment and try again."
        : `Too many failed log-ins. Try again in ${error.retryAfterSeconds} s.`;
    default:
      return `Log-in failed: ${error.message}`;
  }
}

/** Keeps the log-in button disabled until a 429's Retry-After has passed. */
function blockLoginFor(seconds) {
  clearInterval(loginRetryTimer);
  let remaining = seconds;
  ui.loginButton.disabled = true;
  loginRetryTimer = setInterval(() => {
    remaining -= 1;
    if (remaining <= 0) {
      clearInterval(loginRetryTimer);
      ui.loginButton.disabled = false;
      ui.loginError.textContent = "";
      return;
    }
    ui.loginError.textContent = `Too many failed log-ins. Try again in ${remaining} s.`;
  }, 1000);
}

async function onLoginSubmit(event, onLoggedIn) {
  event.preventDefault();
  ui.loginError.textContent = "";
  ui.loginNotice.textContent = "";
  ui.loginButton.disabled = true;
  const name = ui.loginName.value;

  let token;
  try {
    token = await login(name, ui.loginPassword.value);
  } catch (error) {
    ui.loginError.textContent = loginErrorText(error);
    ui.loginButton.disabled = false;
    if (error instanceof ApiError && error.status === 429 && error.retryAfterSeconds) {
      blockLoginFor(error.retryAfterSeconds);
    }
    if (error instanceof ApiError && error.status === 400) {
      ui.loginName.focus();
    } else {
      ui.loginPassword.select();
      ui.loginPassword.focus();
    }
    return;
  }

  ui.loginButton.disabled = false;
  ui.loginPassword.value = "";
  onLoggedIn(token, name.trim());
}
