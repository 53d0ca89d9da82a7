// One assistant answer: a view of one run's events (or of a stored message), kept as plain
// state so it can be snapshotted, restored after a reload, and continued from its last seq.

import { describeRunError } from "./api.js";
import { renderSources, renderUi } from "./cards.js";
import { formatMs, h, icon } from "./dom.js";
import { renderInto } from "./markdown.js";

const ACTIVE = new Set(["queued", "streaming"]);

export function userMessage(text, attachments = []) {
  return h(
    "article",
    { class: "msg msg-user", "aria-label": "You said" },
    attachments.length
      ? h("ul", { class: "msg-files", "aria-label": "Attached files" }, attachments.map((f) => h("li", { class: "file-chip" }, icon("file"), f.name)))
      : null,
    h("div", { class: "bubble", text }),
  );
}

function blankState(fields) {
  return {
    runId: null,
    threadId: null,
    assistant: "",
    input: "",
    startedAt: Date.now(),
    lastSeq: 0,
    status: "queued",
    text: "",
    tools: [],
    rejected: [],
    sources: [],
    fallbacks: [],
    error: null,
    usage: null,
    finishReason: null,
    model: null,
    messageId: null,
    rating: 0,
    reason: null,
    ...fields,
  };
}

function mergeSources(existing, incoming) {
  const key = (s) => `${s.document ?? s.title ?? ""}\u0000${typeof s.chunk === "string" ? s.chunk.slice(0, 80) : s.chunk ?? ""}`;
  const seen = new Set(existing.map(key));
  const merged = [...existing];
  for (const source of incoming ?? []) {
    if (source && typeof source === "object" && !seen.has(key(source))) {
      seen.add(key(source));
      merged.push(source);
    }
  }
  return merged;
}

export class Reply {
  // hooks: {send(text), feedback(reply, rating), changed(reply)}
  constructor(fields, hooks) {
    this.state = blankState(fields);
    this.hooks = hooks;
    this.connection = "live";
    this.frame = 0;
    this.textDirty = true;
    this.extrasDirty = true;
    this.build();
    this.render();
  }

  static fromMessage(message, assistant, hooks) {
    const usage = message.usage ?? null;
    const calls = Array.isArray(message.tool_calls) ? message.tool_calls : [];
    return new Reply(
      {
        runId: message.run_id,
        threadId: message.thread_id,
        assistant,
        status: "completed",
        text: message.content ?? "",
        sources: message.sources ?? [],
        rejected: calls.filter((call) => call.status === "rejected").map((call) => ({
          id: call.id,
          name: call.name ?? "tool",
          reason: call.output?.error ?? null,
          suggestions: call.output?.suggestions ?? [],
        })),
        tools: calls.filter((call) => call.status !== "rejected").map((call) => ({
          id: call.id,
          name: call.name ?? call.function?.name ?? "tool",
          arguments: call.arguments,
          output: call.output,
          ui: call.ui ?? null,
          status: "done",
        })),
        usage,
        finishReason: message.finish_reason ?? null,
        model: message.model ?? null,
        messageId: message.id,
        rating: message.feedback === 1 || message.feedback === -1 ? message.feedback : 0,
      },
      hooks,
    );
  }

  static fromRun(run, assistant, hooks) {
    return new Reply(
      {
        runId: run.id,
        threadId: run.thread_id,
        assistant,
        input: run.input,
        status: run.status === "completed" ? "completed" : run.status === "failed" || run.status === "interrupted" ? "failed" : "cancelled",
        text: run.output ?? "",
        error: run.error,
        usage: run.usage,
        finishReason: run.finish_reason ?? null,
        model: run.model,
        messageId: run.output_message_id,
        reason: run.status === "interrupted" ? "interrupted" : null,
      },
      hooks,
    );
  }

  get active() {
    return ACTIVE.has(this.state.status);
  }

  apply({ seq, type, data }) {
    const s = this.state;
    if (seq <= s.lastSeq && !type.startsWith("run.")) return;
    s.lastSeq = Math.max(s.lastSeq, seq);
    switch (type) {
      case "run.started":
        s.status = "streaming";
        s.model = data.model ?? s.model;
        this.extrasDirty = true;
        break;
      case "message.delta":
        if (!s.text || s.status !== "streaming") this.extrasDirty = true;
        s.status = "streaming";
        s.text += data.text ?? "";
        this.textDirty = true;
        break;
      case "tool.call": {
        const existing = s.tools.find((t) => t.id && t.id === data.id);
        if (existing) Object.assign(existing, { name: data.name, arguments: data.arguments });
        else s.tools.push({ id: data.id, name: data.name, arguments: data.arguments, status: "running", output: null, ui: null });
        this.extrasDirty = true;
        break;
      }
      case "tool.result": {
        const tool = s.tools.find((t) => t.id && t.id === data.id);
        const fields = { status: "done", output: data.output, ui: data.ui ?? null };
        if (tool) Object.assign(tool, fields);
        else s.tools.push({ id: data.id, name: data.name ?? "tool", arguments: null, ...fields });
        this.extrasDirty = true;
        break;
      }
      case "tool.rejected": {
        s.rejected.push({ id: data.id, name: data.name, reason: data.reason, suggestions: data.suggestions ?? [] });
        const tool = s.tools.find((t) => t.id && t.id === data.id);
        if (tool) tool.status = "rejected";
        this.extrasDirty = true;
        break;
      }
      case "retrieval":
        s.sources = mergeSources(s.sources, data.sources);
        this.textDirty = this.extrasDirty = true;
        break;
      case "provider.fallback":
        s.fallbacks.push({ from: data.from, to: data.to, reason: data.reason });
        this.extrasDirty = true;
        break;
      case "run.completed":
        s.status = "completed";
        if (typeof data.text === "string") s.text = data.text;
        // The sources the answer rests on: none for a decline, which cites nothing, though the
        // search found passages (the "retrieval" event's, shown while it was under way).
        if (Array.isArray(data.sources)) s.sources = mergeSources([], data.sources);
        s.usage = data.usage ?? s.usage;
        s.finishReason = data.finish_reason ?? null;
        s.messageId = data.message_id ?? s.messageId;
        this.textDirty = this.extrasDirty = true;
        break;
      case "run.failed":
        s.status = "failed";
        s.error = data.error ?? { code: "error", message: "The reply failed." };
        this.textDirty = this.extrasDirty = true;
        break;
      case "run.cancelled":
        s.status = "cancelled";
        s.reason = data.reason ?? null;
        this.textDirty = this.extrasDirty = true;
        break;
      default:
        return;
    }
    this.schedule();
    this.hooks.changed?.(this);
  }

  reset() {
    const { runId, threadId, assistant, input } = this.state;
    this.state = blankState({ runId, threadId, assistant, input });
    this.cardEls?.clear();
    this.cards.replaceChildren();
    this.textDirty = this.extrasDirty = true;
    this.schedule();
  }

  setConnection(connection) {
    if (connection === this.connection) return;
    this.connection = connection;
    this.extrasDirty = true;
    this.schedule();
  }

  markStopping() {
    this.stopping = true;
    this.extrasDirty = true;
    this.schedule();
  }

  // Renders at most once per frame, however fast the deltas arrive.
  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.render();
  }

  build() {
    const initial = (this.state.assistant || "P").slice(0, 1).toUpperCase();
    this.activity = h("div", { class: "activity" });
    this.cards = h("div", { class: "cards" });
    this.body = h("div", { class: "markdown" });
    this.status = h("div", { class: "reply-status" });
    this.sources = h("div", { class: "reply-sources" });
    this.actions = h("div", { class: "actions" });
    this.usagePanel = h("div", { class: "usage-panel", hidden: true });
    this.el = h(
      "article",
      { class: "msg msg-assistant", "aria-label": "Assistant replied" },
      h("div", { class: "avatar", "aria-hidden": "true", text: initial }),
      h("div", { class: "msg-main" }, this.activity, this.cards, this.body, this.status, this.sources, this.actions, this.usagePanel),
    );
  }

  render() {
    const s = this.state;
    this.el.dataset.runId = s.runId ?? "";
    this.el.dataset.status = s.status;
    this.el.setAttribute("aria-busy", String(this.active));
    if (this.textDirty) {
      this.textDirty = false;
      renderInto(this.body, s.text);
      if (s.sources.length) this.linkCitations();
      this.body.classList.toggle("streaming", this.active && s.text.length > 0);
      this.body.hidden = s.text.length === 0;
    }
    if (this.extrasDirty) {
      this.extrasDirty = false;
      this.renderActivity();
      this.renderCards();
      this.renderStatus();
      this.sources.replaceChildren(renderSources(s.sources) ?? "");
      this.renderActions();
    }
    this.hooks.rendered?.(this);
  }

  // "[2]" in the text becomes a small button that brings source 2 into view.
  linkCitations() {
    const count = this.state.sources.length;
    const walker = document.createTreeWalker(this.body, NodeFilter.SHOW_TEXT, {
      acceptNode: (node) => (node.parentElement.closest("code, pre, a") ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
    });
    const nodes = [];
    while (walker.nextNode()) if (/\[\d{1,2}\]/.test(walker.currentNode.data)) nodes.push(walker.currentNode);
    for (const node of nodes) {
      const parts = node.data.split(/(\[\d{1,2}\])/);
      node.replaceWith(...parts.map((part) => {
        const n = Number(part.slice(1, -1));
        if (!/^\[\d+\]$/.test(part) || n < 1 || n > count) return part;
        const source = this.state.sources[n - 1];
        const title = String(source.title || source.document || `Source ${n}`);
        return h("button", {
          type: "button",
          class: "cite",
          "aria-label": `Source ${n}: ${title}`,
          title,
          text: String(n),
          onclick: () => {
            const item = this.sources.querySelectorAll(".source")[n - 1];
            item?.scrollIntoView({ block: "nearest", behavior: "smooth" });
            item?.classList.remove("flash");
            void item?.offsetWidth;
            item?.classList.add("flash");
          },
        });
      }));
    }
  }

  renderActivity() {
    const s = this.state;
    const items = [];
    for (const tool of s.tools) {
      if (tool.status === "rejected") continue;
      const running = tool.status === "running";
      items.push(
        h(
          "details",
          { class: `tool-chip${running ? " running" : ""}` },
          h(
            "summary",
            {},
            running ? h("span", { class: "spinner", "aria-hidden": "true" }) : icon("tool"),
            h("span", { text: running ? `Using ${tool.name}…` : `Used ${tool.name}` }),
          ),
          h("div", { class: "tool-detail" },
            tool.arguments !== null && tool.arguments !== undefined ? h("pre", { text: `arguments: ${pretty(tool.arguments)}` }) : null,
            tool.output !== null && tool.output !== undefined ? h("pre", { text: `result: ${pretty(tool.output, 1200)}` }) : null,
          ),
        ),
      );
    }
    for (const r of s.rejected) {
      const suggestions = (Array.isArray(r.suggestions) ? r.suggestions : [])
        .map((x) => (x && typeof x === "object" ? (x.name ? `${x.name} (${x.id})` : x.id) : x))
        .filter((x) => typeof x === "string" || typeof x === "number");
      items.push(
        h(
          "p",
          { class: "note note-rejected", title: suggestions.length ? `Closest known: ${suggestions.join(", ")}` : null },
          icon("warn"),
          h("span", { text: `Skipped ${r.name ?? "a tool"}: ${r.reason ?? "the call was refused"}` }),
        ),
      );
    }
    for (const f of s.fallbacks) {
      items.push(h("p", { class: "note note-fallback" }, icon("swap"), h("span", { text: `Switched to ${f.to}${f.reason ? ` (${f.reason})` : ""}` })));
    }
    if (this.connection === "reconnecting" && this.active) {
      items.push(h("p", { class: "note note-reconnecting", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Connection lost — reconnecting…"));
    }
    this.activity.replaceChildren(...items);
    this.activity.hidden = items.length === 0;
  }

  renderCards() {
    this.cardEls ??= new Map();
    this.state.tools.forEach((tool, index) => {
      const key = tool.id ?? `#${index}`;
      if (!tool.ui || this.cardEls.has(key)) return;
      const card = renderUi(tool.ui, { send: (text) => this.hooks.send?.(text) });
      if (card) {
        this.cardEls.set(key, card);
        this.cards.append(card);
      }
    });
    this.cards.hidden = this.cards.childElementCount === 0;
  }

  renderStatus() {
    const s = this.state;
    let content = null;
    if (s.status === "queued" || (s.status === "streaming" && !s.text && !s.tools.some((t) => t.status === "running"))) {
      content = h("span", { class: "typing", "aria-label": "Writing a reply" }, h("i"), h("i"), h("i"));
    }
    if (this.stopping && this.active) content = h("span", { class: "note", text: "Stopping…" });
    if (s.status === "completed" && s.finishReason === "length") {
      content = h("p", { class: "note note-cut", role: "note", text: "Cut short: the reply reached its length limit." });
    }
    if (s.status === "cancelled") {
      content = h("p", { class: "note note-stopped", text: s.reason === "interrupted" ? "Interrupted by a newer message." : "Stopped." });
    }
    if (s.status === "failed") {
      const { title, detail } = describeRunError(s.error);
      content = h("div", { class: "error-box", role: "alert" }, icon("warn"), h("div", {}, h("strong", { text: title }), h("p", { text: detail })));
    }
    this.status.replaceChildren(content ?? "");
    this.status.hidden = content === null;
  }

  renderActions() {
    const s = this.state;
    if (this.active || (!s.text && s.status !== "completed")) {
      this.actions.replaceChildren();
      this.actions.hidden = true;
      return;
    }
    this.actions.hidden = false;
    const copy = h("button", { type: "button", class: "icon-btn small", "aria-label": "Copy reply", title: "Copy" }, icon("copy"));
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(s.text);
        copy.replaceChildren(icon("check"));
        setTimeout(() => copy.replaceChildren(icon("copy")), 1500);
      } catch {
        // clipboard refused (insecure origin): nothing to do
      }
    });
    const buttons = [copy];
    if (s.messageId) {
      for (const [rating, name, label] of [[1, "thumbUp", "Good answer"], [-1, "thumbDown", "Bad answer"]]) {
        const button = h("button", {
          type: "button",
          class: "icon-btn small feedback",
          "aria-label": label,
          title: label,
          "aria-pressed": String(s.rating === rating),
          dataset: { rating: String(rating) },
        }, icon(name));
        button.addEventListener("click", () => this.rate(rating).catch(() => {}));
        buttons.push(button);
      }
    }
    if (s.usage) {
      const toggle = h("button", { type: "button", class: "icon-btn small", "aria-label": "Show usage", title: "Usage", "aria-expanded": String(!this.usagePanel.hidden) }, icon("info"));
      toggle.addEventListener("click", () => {
        this.usagePanel.hidden = !this.usagePanel.hidden;
        toggle.setAttribute("aria-expanded", String(!this.usagePanel.hidden));
        if (!this.usagePanel.hidden) this.renderUsage();
      });
      buttons.push(toggle);
    }
    this.actions.replaceChildren(...buttons);
  }

  renderUsage() {
    const u = this.state.usage ?? {};
    const cost = Number(u.cost_usd);
    const rows = [
      ["Model", this.state.model ?? "–"],
      ["Tokens", `${u.input_tokens ?? "–"} in · ${u.output_tokens ?? "–"} out`],
      ["Latency", formatMs(u.latency_ms)],
      ["First token", formatMs(u.ttft_ms)],
      ["Cost", Number.isFinite(cost) ? (cost === 0 ? "$0" : `$${cost.toFixed(cost < 0.01 ? 5 : 4)}`) : "–"],
    ];
    this.usagePanel.replaceChildren(h("dl", { class: "usage", "aria-label": "Usage" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])));
  }

  async rate(rating) {
    const previous = this.state.rating;
    if (previous === rating || !this.state.messageId) return;
    this.state.rating = rating;
    this.extrasDirty = true;
    this.flush();
    try {
      await this.hooks.feedback?.(this, rating);
    } catch (error) {
      this.state.rating = previous;
      this.extrasDirty = true;
      this.flush();
      throw error;
    }
  }

  snapshot() {
    return this.state;
  }
}

function pretty(value, limit = 600) {
  let text;
  if (typeof value === "string") {
    try {
      text = JSON.stringify(JSON.parse(value), null, 1);
    } catch {
      text = value;
    }
  } else {
    text = JSON.stringify(value, null, 1);
  }
  text = String(text ?? "");
  return text.length > limit ? `${text.slice(0, limit)}…` : text;
}
