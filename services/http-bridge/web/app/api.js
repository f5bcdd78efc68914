// The bridge's REST API (DESIGN §7) for the web app: the session (access and refresh tokens in
// sessionStorage, so a reload keeps it and closing the tab ends it), JSON calls, and the error
// object of the contract as thrown errors. The access token is refreshed ahead of its expiry (a
// timer, and before any call once it is close), so requests do not meet a 401 in the normal
// case; a 401 anyway (clock skew, a suspended tab) refreshes it once and retries.

const KEY = "mediabus.session";

/** An error reply: `status` is the HTTP status, `code` and `message` come from the body. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code || "HTTP_ERROR";
  }
}

let session = JSON.parse(sessionStorage.getItem(KEY) || "null");
let refreshing = null;
let timer = null;
const listeners = new Set();

/**
 * When an access token received now should be replaced, in epoch milliseconds: a quarter of its
 * lifetime (`exp - iat`, at most a minute) before it ends. Counted from the client's clock at
 * receipt, so a skewed clock does not matter. Now, when the token cannot be read.
 */
function renewAt(accessToken) {
  try {
    const part = accessToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const { iat, exp } = JSON.parse(atob(part));
    const lifetime = Math.max(0, exp - iat);
    return Date.now() + (lifetime - Math.min(60, lifetime / 4)) * 1000;
  } catch {
    return Date.now();
  }
}

/** Arms the timer that refreshes the access token ahead of its expiry (none when signed out). */
function schedule() {
  clearTimeout(timer);
  timer = null;
  if (!session) return;
  const wait = Math.max(0, (session.renewAt ?? 0) - Date.now());
  timer = setTimeout(() => {
    token(true).catch(() => {
      // A refused refresh token has signed the user out already; anything else retries.
      if (session) timer = setTimeout(schedule, 5000);
    });
  }, wait);
}

/** The current session `{accessToken, refreshToken, user, renewAt}` or null. */
export function current() {
  return session;
}

/** Calls `fn(session)` whenever the session changes (sign-in, refresh, sign-out). */
export function onSession(fn) {
  listeners.add(fn);
}

function save(next) {
  if (next && next.accessToken !== session?.accessToken) next.renewAt = renewAt(next.accessToken);
  session = next;
  if (next) sessionStorage.setItem(KEY, JSON.stringify(next));
  else sessionStorage.removeItem(KEY);
  schedule();
  for (const fn of listeners) fn(session);
}

/**
 * A fresh access token: refreshes it (once, shared by concurrent callers) when asked to, or when
 * it is about to expire. Throws ApiError 401 when signed out or the session has ended.
 */
export async function token(forceRefresh = false) {
  if (!session) throw new ApiError(401, { code: "UNAUTHENTICATED", message: "Please sign in." });
  if (forceRefresh || Date.now() >= (session.renewAt ?? 0)) {
    refreshing ??= refresh().finally(() => (refreshing = null));
    await refreshing;
  }
  return session.accessToken;
}

async function refresh() {
  const reply = await fetch("/api/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refreshToken: session.refreshToken }),
  });
  if (reply.status === 401 || reply.status === 400) {
    // The refresh token is used up, revoked or expired: the session is over.
    save(null);
    throw new ApiError(401, { code: "SESSION_EXPIRED", message: "Your session ended; please sign in again." });
  }
  const next = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, next); // e.g. 503: the session stays, retry later
  if (!session) return; // signed out meanwhile: the new tokens are not wanted
  save({ ...session, accessToken: next.accessToken, refreshToken: next.refreshToken, user: next.user ?? session.user });
}

/** `fetch` with the bearer token; a 401 refreshes the token and retries once. */
export async function authFetch(path, init = {}) {
  const attempt = async (force) => {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${await token(force)}`);
    return fetch(path, { ...init, headers });
  };
  let reply = await attempt(false);
  if (reply.status === 401 && session) reply = await attempt(true);
  return reply;
}

/** A JSON call; resolves to the reply body (null for 204), throws ApiError otherwise. */
export async function call(method, path, body) {
  const init = { method };
  if (body !== undefined) {
    init.headers = { "content-type": "application/json" };
    init.body = JSON.stringify(body);
  }
  const reply = await authFetch(path, init);
  const data = reply.status === 204 ? null : await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, data);
  return data;
}

/** Signs in (or registers with `name`) and keeps the session. */
export async function signIn(email, password, name) {
  const path = name ? "/api/auth/register" : "/api/auth/login";
  const body = name ? { name, email, password } : { email, password };
  const reply = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await reply.json().catch(() => null);
  if (!reply.ok) throw new ApiError(reply.status, data);
  save({ accessToken: data.accessToken, refreshToken: data.refreshToken, user: data.user });
}

/** Revokes the refresh token (best effort) and forgets the session. */
export async function signOut() {
  const refreshToken = session?.refreshToken;
  save(null);
  if (refreshToken) {
    await fetch("/api/auth/logout", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refreshToken }),
    }).catch(() => {});
  }
}

schedule();
