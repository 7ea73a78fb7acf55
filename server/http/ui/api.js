/**
 * The web app's access to the cluster: REST calls with the signed-in token, the task event
 * stream (server-sent events read with fetch, so that the token travels in the
 * Authorization header and never in a URL), and scope checks.
 * @module
 */
/* global sessionStorage, fetch, TextDecoder, AbortController, setTimeout, clearTimeout */

const TOKEN_KEY = "taskweb.token";

/** The signed-in token, or null. Kept for this browser tab only. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Remembers the token for this tab. */
export function signIn(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
  scopeCache.clear();
}

/** Forgets the token. */
export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  scopeCache.clear();
}

/** An API error with the cluster's code and message. */
export class ApiCallError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiCallError";
    this.status = status;
    this.code = code;
  }
}

/**
 * Calls `/api/v1<path>`. Resolves with the parsed JSON (or null for an empty body); rejects
 * with an {@link ApiCallError}.
 */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t != null) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  const text = await res.text();
  let data = null;
  if (text !== "") {
    try {
      data = JSON.parse(text);
    } catch {
      data = { message: text };
    }
  }
  if (!res.ok) {
    throw new ApiCallError(
      res.status,
      data?.code ?? "HttpError",
      data?.message ?? `The cluster answered ${res.status}.`,
    );
  }
  return data;
}

/**
 * Reads a streamed text response (a followed log) with the token, calling `onText` with each
 * chunk until the response ends or `signal` aborts.
 */
export async function streamText(path, onText, signal) {
  const res = await fetch(`/api/v1${path}`, {
    headers: { Authorization: `Bearer ${token() ?? ""}` },
    signal,
  });
  if (!res.ok || res.body == null) throw new ApiCallError(res.status, "HttpError", "No log.");
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    onText(decoder.decode(value, { stream: true }));
  }
}

/**
 * Subscribes to a stream of task events (`/events`, or `/task-groups/<id>/events`),
 * reconnecting after a drop (not after a refusal: `onStatus("refused")` says so once).
 * `onEvent(name, data)` receives each event. Returns a function that ends the subscription.
 */
export function subscribe(path, onEvent, onStatus = () => {}) {
  const controller = new AbortController();
  let retry;
  const connect = async () => {
    try {
      const res = await fetch(`/api/v1${path}`, {
        headers: { Authorization: `Bearer ${token() ?? ""}`, Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (res.status === 401 || res.status === 403) {
        // Not allowed: asking again every second would not change that.
        onStatus("refused");
        return;
      }
      if (!res.ok || res.body == null) throw new Error(`events: ${res.status}`);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data.push(line.slice(6));
          }
          // The cluster says hello once it has read the current states: live from here.
          if (name === "hello") onStatus("live");
          if (data.length > 0) onEvent(name, JSON.parse(data.join("\n")));
        }
      }
    } catch {
      // Dropped or refused: try again below unless the view closed it.
    }
    if (controller.signal.aborted) return;
    onStatus("reconnecting");
    retry = setTimeout(() => void connect(), 1000);
  };
  void connect();
  return () => {
    controller.abort();
    clearTimeout(retry);
  };
}

const scopeCache = new Map();

/** Whether one granted scope satisfies a required one (Taskcluster's `*` suffix rule). */
function grants(granted, required) {
  return (
    granted === required || (granted.endsWith("*") && required.startsWith(granted.slice(0, -1)))
  );
}

/**
 * Asks the cluster which of the named checks the signed-in client satisfies, each check a
 * list of scopes that must all be held: `{ rerun: ["taskweb:task:rerun:t1"] }` →
 * `{ rerun: true }`. Uses `POST /api/v1/whoami/satisfies`; a cluster without that route is
 * asked for the client's scopes (`GET /api/v1/whoami`) and they are compared here. Answers
 * are cached for the page's life; a failed check counts as not satisfied.
 */
export async function satisfies(checks) {
  const result = {};
  const missing = {};
  for (const [name, scopes] of Object.entries(checks)) {
    const key = scopes.join(" ");
    if (scopeCache.has(key)) result[name] = scopeCache.get(key);
    else missing[name] = scopes;
  }
  if (Object.keys(missing).length === 0) return result;
  let answers;
  try {
    answers = await api("/whoami/satisfies", { method: "POST", body: { checks: missing } });
  } catch (error) {
    if (!(error instanceof ApiCallError) || error.status !== 404) {
      for (const name of Object.keys(missing)) result[name] = false;
      return result;
    }
    const me = await whoami();
    answers = {};
    for (const [name, scopes] of Object.entries(missing)) {
      answers[name] = scopes.every((s) => me.scopes.some((g) => grants(g, s)));
    }
  }
  for (const [name, scopes] of Object.entries(missing)) {
    const ok = answers?.[name] === true;
    scopeCache.set(scopes.join(" "), ok);
    result[name] = ok;
  }
  return result;
}

let whoamiPromise;

/** The signed-in client: `{ clientId, scopes }`. */
export async function whoami() {
  whoamiPromise ??= api("/whoami").catch((error) => {
    whoamiPromise = undefined;
    throw error;
  });
  return await whoamiPromise;
}

/** Forgets the cached client (after signing in or out). */
export function forgetWhoami() {
  whoamiPromise = undefined;
  scopeCache.clear();
}
