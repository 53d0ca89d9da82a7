// Reading a run's event stream with fetch, so the request can carry an API key and resume
// with ?after=N (EventSource can send neither a header nor a chosen cursor).

import { ApiError, authHeaders, errorFrom, request, url } from "./api.js";

export const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled"]);

// Frames of a text/event-stream body: {id, event, data}, per the WHATWG parsing rules.
export async function* frames(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let event = "";
  let id = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A CR at the very end may be the first half of a CRLF: keep it for the next chunk.
      const held = buffer.endsWith("\r") ? "\r" : "";
      const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
      buffer = lines.pop() + held;
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield { id, event: event || "message", data: data.join("\n") };
          data = [];
          event = "";
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let valuePart = colon < 0 ? "" : line.slice(colon + 1);
        if (valuePart.startsWith(" ")) valuePart = valuePart.slice(1);
        if (field === "data") data.push(valuePart);
        else if (field === "event") event = valuePart;
        else if (field === "id" && !valuePart.includes("\0")) id = valuePart;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

// A terminal event made from the run itself, for a stream that has nothing left to send. The
// run does not say which sources its answer kept: none are given, so the ones shown stay.
function terminalFromRun(run) {
  if (run.status === "completed") {
    return { type: "run.completed", data: { message_id: run.output_message_id, text: run.output ?? "", usage: run.usage } };
  }
  if (run.status === "cancelled") return { type: "run.cancelled", data: {} };
  return { type: "run.failed", data: { error: run.error ?? { code: run.status, message: "the run did not finish" } } };
}

// Follow a run from event `after` to its terminal event, reconnecting (from the last event
// seen) whenever the connection drops. Calls onEvent({seq, type, data}) for each new event.
export async function followRun(runId, { after = 0, signal, onEvent, onStatus = () => {} }) {
  let cursor = after;
  let failures = 0;
  while (!signal.aborted) {
    let received = 0;
    let response = null;
    try {
      response = await fetch(url(`v1/runs/${encodeURIComponent(runId)}/events?after=${cursor}`), {
        headers: { Accept: "text/event-stream", ...authHeaders() },
        cache: "no-store",
        signal,
      });
    } catch {
      if (signal.aborted) return;
    }
    if (response && !response.ok) {
      const error = await errorFrom(response);
      if (response.status < 500 && response.status !== 429) throw error;
    } else if (response) {
      onStatus("live");
      try {
        for await (const frame of frames(response.body)) {
          const seq = Number.parseInt(frame.id, 10);
          if (!Number.isFinite(seq) || seq <= cursor) continue;
          cursor = seq;
          received += 1;
          failures = 0;
          onEvent({ seq, type: frame.event, data: frame.data ? JSON.parse(frame.data) : {} });
          if (TERMINAL.has(frame.event)) return;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (!(err instanceof TypeError) && err.name !== "AbortError") throw err;
      }
      if (signal.aborted) return;
      if (received === 0) {
        // The stream closed with nothing new: if the run is over, its end was already sent.
        try {
          const run = await request("GET", `v1/runs/${encodeURIComponent(runId)}`, { signal });
          if (!["queued", "running"].includes(run.status)) {
            onEvent({ seq: cursor, ...terminalFromRun(run) });
            return;
          }
        } catch (err) {
          if (signal.aborted) return;
          if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 429) throw err;
        }
      }
    }
    if (signal.aborted) return;
    onStatus("reconnecting");
    await sleep(Math.min(8000, 400 * 2 ** failures), signal);
    failures += 1;
  }
}
