// The native API (v1), seen from the page. Errors become ApiError with the server's code and message.

const KEY_STORAGE = "parley.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, { retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

// Relative to the page, so Parley also works behind a proxy under a path prefix.
export function url(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI).toString();
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) localStorage.setItem(KEY_STORAGE, value);
  else localStorage.removeItem(KEY_STORAGE);
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

export function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function errorFrom(response) {
  let code = `http_${response.status}`;
  let message = response.statusText || "the request failed";
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status text
  }
  const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  return new ApiError(response.status, code, message, { retryAfter: Number.isFinite(retryAfter) ? retryAfter : null });
}

const listeners = new Set();

// Called with every ApiError (the app uses it to ask for an API key on 401).
export function onApiError(listener) {
  listeners.add(listener);
}

export async function request(method, path, { body, headers = {}, signal } = {}) {
  let response;
  try {
    response = await fetch(url(path), {
      method,
      headers: {
        Accept: "application/json",
        ...authHeaders(),
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The Parley server cannot be reached.");
  }
  if (!response.ok) {
    const error = await errorFrom(response);
    for (const listener of listeners) listener(error);
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

const enc = encodeURIComponent;

export const api = {
  assistants: () => request("GET", "v1/assistants"),
  threads: (before) => request("GET", `v1/threads?limit=30${before ? `&before=${enc(before)}` : ""}`),
  thread: (id) => request("GET", `v1/threads/${enc(id)}`),
  createThread: (assistant) => request("POST", "v1/threads", { body: { assistant } }),
  renameThread: (id, title) => request("PATCH", `v1/threads/${enc(id)}`, { body: { title } }),
  deleteThread: (id) => request("DELETE", `v1/threads/${enc(id)}`),
  async messages(id) {
    const all = [];
    let after = null;
    for (;;) {
      const page = await request(
        "GET",
        `v1/threads/${enc(id)}/messages?limit=200${after ? `&after=${enc(after)}` : ""}`,
      );
      all.push(...page.data);
      if (!page.has_more || page.data.length === 0) return all;
      after = page.data[page.data.length - 1].id;
    }
  },
  // One retry when the connection drops: the same Idempotency-Key makes it safe (never two runs).
  async startRun(threadId, input, metadata) {
    const options = { body: metadata ? { input, metadata } : { input }, headers: { "Idempotency-Key": newKey() } };
    try {
      return await request("POST", `v1/threads/${enc(threadId)}/runs`, options);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 0) throw error;
      await new Promise((resolve) => setTimeout(resolve, 600));
      return request("POST", `v1/threads/${enc(threadId)}/runs`, options);
    }
  },
  run: (id) => request("GET", `v1/runs/${enc(id)}`),
  cancel: (id) => request("POST", `v1/runs/${enc(id)}/cancel`),
  knowledgeBases: () => request("GET", "v1/knowledge-bases"),
  createKnowledgeBase: (name) => request("POST", "v1/knowledge-bases", { body: { name } }),
  documents: (kbId) => request("GET", `v1/knowledge-bases/${enc(kbId)}/documents`),
  deleteDocument: (kbId, docId) => request("DELETE", `v1/knowledge-bases/${enc(kbId)}/documents/${enc(docId)}`),
  job: (kbId, jobId) => request("GET", `v1/knowledge-bases/${enc(kbId)}/jobs/${enc(jobId)}`),
  feedback: (messageId, rating) => request("POST", `v1/messages/${enc(messageId)}/feedback`, { body: { rating } }),
};

// A headline and a sentence for an ApiError, in words a person can act on.
export function describeError(error) {
  if (!(error instanceof ApiError)) {
    return { title: "Something went wrong", detail: String(error?.message ?? error) };
  }
  const { status, code, message, retryAfter } = error;
  const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again in a moment.";
  if (status === 0) return { title: "Can’t reach Parley", detail: "Check that the server is running, then try again." };
  if (/budget|quota/i.test(code)) return { title: "Usage budget reached", detail: message };
  if (status === 429) return { title: "Too many requests", detail: `You’re sending requests faster than this server allows.${wait}` };
  if (status === 401) return { title: "API key needed", detail: message };
  if (code === "run_active") return { title: "A reply is still being written", detail: "Wait for it to finish, or stop it first." };
  if (status === 413) return { title: "Too large", detail: message };
  if (status === 415) return { title: "File type not allowed", detail: message };
  if (status === 404) return { title: "Not found", detail: message };
  if (status >= 500) return { title: "Server error", detail: message };
  return { title: "That didn’t work", detail: message };
}

// The same for a run.failed error ({code, message}).
export function describeRunError(error) {
  const code = error?.code ?? "error";
  const message = error?.message ?? "The reply failed.";
  if (code === "interrupted") return { title: "The reply was interrupted", detail: message };
  if (/budget|quota/i.test(code)) return { title: "Usage budget reached", detail: message };
  if (/rate_limit/i.test(code)) return { title: "Rate limited", detail: message };
  if (/provider|model|unavailable|fallback|script/i.test(code)) return { title: "The model is unavailable", detail: message };
  return { title: "The reply failed", detail: message };
}
