// The chat page: a reader of the native API and of each run's event log.

import { api, ApiError, apiKey, describeError, onApiError, setApiKey } from "./api.js";
import { Composer } from "./composer.js";
import { h } from "./dom.js";
import { KnowledgePanel } from "./knowledge.js";
import { Reply, userMessage } from "./reply.js";
import { Sidebar } from "./sidebar.js";
import { followRun } from "./sse.js";
import { prefs, snapshots } from "./store.js";

const $ = (id) => document.getElementById(id);

const els = {
  messages: $("messages"),
  scroller: $("scroller"),
  empty: $("empty"),
  emptyTitle: $("empty-title"),
  emptyText: $("empty-text"),
  emptyExamples: $("empty-examples"),
  title: $("thread-title"),
  assistant: $("assistant"),
  banner: $("banner"),
  bannerTitle: $("banner-title"),
  bannerText: $("banner-text"),
  announcer: $("announcer"),
  toasts: $("toasts"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  openSidebar: $("open-sidebar"),
  confirmDelete: $("confirm-delete"),
  confirmText: $("confirm-text"),
  signin: $("signin"),
  themeToggle: $("theme-toggle"),
};

const state = {
  assistants: new Map(),
  thread: null,
  view: 0,
  replies: new Map(),
  follows: new Map(),
  pendingSaves: new Set(),
  saveTimer: 0,
  stick: true,
  autoTop: 0,
};

const knowledge = new KnowledgePanel(
  {
    open: $("open-knowledge"),
    dialog: $("knowledge"),
    close: $("knowledge-close"),
    title: $("knowledge-title"),
    intro: $("knowledge-intro"),
    baseField: $("knowledge-base-field"),
    base: $("knowledge-base"),
    add: $("knowledge-add"),
    files: $("knowledge-files"),
    progress: $("knowledge-progress"),
    bar: $("knowledge-bar"),
    statusText: $("knowledge-status"),
    skipped: $("knowledge-skipped"),
    table: $("knowledge-table"),
    docs: $("knowledge-docs"),
    empty: $("knowledge-empty"),
  },
  { announce: (text) => announce(text) },
);

const channel = "BroadcastChannel" in window ? new BroadcastChannel("parley") : null;

// -- small page services ---------------------------------------------------------

function announce(text) {
  els.announcer.textContent = "";
  setTimeout(() => { els.announcer.textContent = text; }, 50);
}

function showError(errorOrText) {
  const { title, detail } = errorOrText instanceof Error || errorOrText instanceof ApiError ? describeError(errorOrText) : errorOrText;
  els.bannerTitle.textContent = title;
  els.bannerText.textContent = detail ?? "";
  els.banner.hidden = false;
}

function hideError() {
  els.banner.hidden = true;
}

function toast(text) {
  const item = h("div", { class: "toast", text });
  els.toasts.append(item);
  setTimeout(() => item.remove(), 5000);
}

function nearBottom() {
  const s = els.scroller;
  return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
}

// Follow the reply while the reader is at the bottom; leave them be once they scroll up.
function scrollToEnd(force = false) {
  if (force) state.stick = true;
  if (!state.stick) return;
  els.scroller.scrollTop = els.scroller.scrollHeight;
  state.autoTop = els.scroller.scrollTop;
}

els.scroller.addEventListener("scroll", () => {
  if (nearBottom()) state.stick = true;
  else if (els.scroller.scrollTop < state.autoTop - 2) state.stick = false;
}, { passive: true });

function updateEmpty() {
  const empty = els.messages.childElementCount === 0;
  els.empty.hidden = !empty;
  if (empty) {
    const name = state.thread?.assistant ?? els.assistant.value;
    const assistant = state.assistants.get(name);
    els.emptyTitle.textContent = "How can I help?";
    els.emptyText.textContent = assistant?.description || "Ask anything. Replies stream as they are written.";
    // What this assistant can do, as prompts to try: a click sends one.
    els.emptyExamples.replaceChildren(
      ...(assistant?.examples ?? []).slice(0, 3).map((text) =>
        h("button", { type: "button", class: "example", text, onclick: () => sendMessage(text, []) }),
      ),
    );
  }
}

// -- theme --------------------------------------------------------------------------

function currentTheme() {
  return document.documentElement.dataset.theme;
}

function applyThemeLabel() {
  const next = currentTheme() === "dark" ? "light" : "dark";
  els.themeToggle.setAttribute("aria-label", `Switch to ${next} theme`);
  els.themeToggle.title = `Switch to ${next} theme`;
  els.themeToggle.querySelector(".theme-label").textContent = next === "dark" ? "Dark theme" : "Light theme";
}

els.themeToggle.addEventListener("click", () => {
  const next = currentTheme() === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  prefs.set("theme", next);
  applyThemeLabel();
});

// -- sidebar (phone: a drawer) ---------------------------------------------------------

function setDrawer(open) {
  document.body.classList.toggle("drawer-open", open);
  els.openSidebar.setAttribute("aria-expanded", String(open));
  els.scrim.hidden = !open;
  if (open) els.sidebar.querySelector("#new-chat")?.focus();
}

els.openSidebar.addEventListener("click", () => setDrawer(true));
els.scrim.addEventListener("click", () => setDrawer(false));
$("close-sidebar").addEventListener("click", () => setDrawer(false));

const sidebar = new Sidebar(
  { list: $("thread-list"), more: $("more-threads"), empty: $("threads-empty") },
  {
    async onRename(thread, title) {
      try {
        const updated = await api.renameThread(thread.id, title);
        sidebar.upsert(updated);
        if (state.thread?.id === updated.id) setThread(updated);
        channel?.postMessage({ type: "threads" });
      } catch (error) {
        showError(error);
        throw error;
      }
    },
    onDelete: (thread) => confirmDelete(thread),
    async onMore(lastId) {
      try {
        const page = await api.threads(lastId);
        sidebar.add(page.data, page.has_more);
      } catch (error) {
        showError(error);
      }
    },
  },
);

async function loadThreads() {
  try {
    const page = await api.threads();
    sidebar.set(page.data, page.has_more);
  } catch (error) {
    showError(error);
  }
}

function confirmDelete(thread) {
  els.confirmText.textContent = `“${thread.title || "New conversation"}” and all its messages will be deleted.`;
  els.confirmDelete.returnValue = "";
  els.confirmDelete.showModal();
  els.confirmDelete.addEventListener(
    "close",
    async () => {
      if (els.confirmDelete.returnValue !== "delete") return;
      try {
        await api.deleteThread(thread.id);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 404)) {
          showError(error);
          return;
        }
      }
      for (const snap of snapshots.forThread(thread.id)) snapshots.remove(snap.runId);
      sidebar.remove(thread.id);
      channel?.postMessage({ type: "deleted", threadId: thread.id });
      if (state.thread?.id === thread.id) newChat();
      announce("Conversation deleted.");
    },
    { once: true },
  );
}

// -- assistants -----------------------------------------------------------------------

async function loadAssistants() {
  try {
    const { data } = await api.assistants();
    state.assistants = new Map(data.map((a) => [a.name, a]));
    const preferred = prefs.get("assistant", "general");
    els.assistant.replaceChildren(...data.map((a) => h("option", { value: a.name, title: a.description || null, text: a.name })));
    els.assistant.value = state.assistants.has(preferred) ? preferred : data[0]?.name ?? "";
    knowledge.setAssistant(state.assistants.get(els.assistant.value));
  } catch (error) {
    showError(error);
  }
}

els.assistant.addEventListener("change", () => {
  prefs.set("assistant", els.assistant.value);
  knowledge.setAssistant(state.assistants.get(els.assistant.value));
  updateEmpty();
});

function setThread(thread) {
  state.thread = thread;
  els.title.textContent = thread ? thread.title || "New conversation" : "New chat";
  document.title = thread?.title ? `${thread.title} · Parley` : "Parley";
  if (thread) {
    if (!state.assistants.has(thread.assistant)) {
      els.assistant.append(h("option", { value: thread.assistant, text: thread.assistant }));
    }
    els.assistant.value = thread.assistant;
  } else {
    const preferred = prefs.get("assistant", els.assistant.value);
    if (state.assistants.has(preferred)) els.assistant.value = preferred;
  }
  knowledge.setAssistant(state.assistants.get(els.assistant.value));
  els.assistant.disabled = Boolean(thread);
  els.assistant.title = thread ? `This conversation is with ${thread.assistant}` : "Choose who to talk to";
}

// -- replies and their streams -----------------------------------------------------------

const hooks = {
  send: (text) => sendMessage(text, []),
  async feedback(reply, rating) {
    try {
      await api.feedback(reply.state.messageId, rating);
      announce(rating > 0 ? "Thanks for the feedback." : "Feedback saved.");
    } catch (error) {
      const { title, detail } = describeError(error);
      toast(`Feedback not saved — ${title}: ${detail}`);
      throw error;
    }
  },
  changed(reply) {
    const runId = reply.state.runId;
    if (reply.active) {
      state.pendingSaves.add(reply);
      state.saveTimer ||= setTimeout(flushSaves, 250);
    } else {
      state.pendingSaves.delete(reply);
      snapshots.remove(runId);
      updateComposer();
      if (reply.state.status === "completed") announce("Reply finished.");
    }
  },
  rendered: () => scrollToEnd(),
};

function flushSaves() {
  clearTimeout(state.saveTimer);
  state.saveTimer = 0;
  for (const reply of state.pendingSaves) {
    if (reply.active) snapshots.save(reply.snapshot());
  }
  state.pendingSaves.clear();
}

function addReply(reply, before = null) {
  state.replies.set(reply.state.runId, reply);
  if (before) before.replaceWith(reply.el);
  else els.messages.append(reply.el);
  updateEmpty();
  return reply;
}

function follow(reply, after) {
  const runId = reply.state.runId;
  if (state.follows.has(runId)) return;
  const controller = new AbortController();
  state.follows.set(runId, controller);
  updateComposer();
  followRun(runId, {
    after,
    signal: controller.signal,
    onEvent: (event) => reply.apply(event),
    onStatus: (connection) => reply.setConnection(connection),
  })
    .catch((error) => {
      if (controller.signal.aborted) return;
      if (error instanceof ApiError && error.code === "invalid_cursor") {
        // The snapshot is ahead of the log (it cannot be trusted): replay the run from its start.
        snapshots.remove(runId);
        state.follows.delete(runId);
        reply.reset();
        follow(reply, 0);
        return;
      }
      reply.apply({ seq: reply.state.lastSeq, type: "run.failed", data: { error: { code: error.code ?? "error", message: error.message } } });
    })
    .finally(() => {
      if (state.follows.get(runId) === controller) state.follows.delete(runId);
      reply.setConnection("live");
      updateComposer();
    });
}

function stopFollowing() {
  flushSaves();
  for (const controller of state.follows.values()) controller.abort();
  state.follows.clear();
  state.replies.clear();
}

function activeReply() {
  for (const reply of state.replies.values()) {
    if (reply.active && reply.state.threadId === state.thread?.id) return reply;
  }
  return null;
}

function updateComposer() {
  composer.setBusy(Boolean(activeReply()));
}

async function stop() {
  const reply = activeReply();
  if (!reply) return;
  reply.markStopping();
  try {
    await api.cancel(reply.state.runId);
  } catch (error) {
    reply.stopping = false;
    showError(error);
  }
}

// -- opening a conversation ------------------------------------------------------------------

function newChat() {
  stopFollowing();
  state.view += 1;
  setThread(null);
  els.messages.replaceChildren();
  sidebar.setActive(null);
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  hideError();
  updateEmpty();
  updateComposer();
  composer.focus();
}

async function openThread(id) {
  stopFollowing();
  const view = ++state.view;
  sidebar.setActive(id);
  els.messages.replaceChildren();
  els.empty.hidden = true;
  let thread;
  let messages;
  try {
    [thread, messages] = await Promise.all([api.thread(id), api.messages(id)]);
  } catch (error) {
    if (view !== state.view) return;
    if (error instanceof ApiError && error.status === 404) {
      for (const snap of snapshots.forThread(id)) snapshots.remove(snap.runId);
      sidebar.remove(id);
      newChat();
      showError({ title: "Conversation not found", detail: "It may have been deleted in another tab." });
    } else {
      showError(error);
    }
    return;
  }
  if (view !== state.view) return;
  hideError();
  setThread(thread);
  await renderHistory(thread, messages, view);
  if (view !== state.view) return;
  updateEmpty();
  updateComposer();
  scrollToEnd(true);
}

// Messages oldest first; a user message whose run has no answer yet is a run still in
// progress (resume it: from this tab's snapshot, or from its first event) or one that
// ended without an answer (show what it produced and how it ended).
async function renderHistory(thread, messages, view) {
  const answered = new Set(messages.filter((m) => m.role === "assistant" && m.run_id).map((m) => m.run_id));
  const pending = [];
  for (const message of messages) {
    if (message.role === "user") {
      els.messages.append(userMessage(message.content));
      if (message.run_id && !answered.has(message.run_id)) {
        const slot = h("div", { class: "slot" });
        els.messages.append(slot);
        pending.push({ runId: message.run_id, slot });
      }
    } else if (message.role === "assistant") {
      addReply(Reply.fromMessage(message, thread.assistant, hooks));
    }
  }
  for (const snap of snapshots.forThread(thread.id)) {
    if (answered.has(snap.runId)) snapshots.remove(snap.runId);
    else if (!pending.some((p) => p.runId === snap.runId)) {
      // Still queued when this tab last saw it: its user message is not stored yet.
      els.messages.append(userMessage(snap.input));
      const slot = h("div", { class: "slot" });
      els.messages.append(slot);
      pending.push({ runId: snap.runId, slot });
    }
  }
  await Promise.all(
    pending.map(async ({ runId, slot }) => {
      const snap = snapshots.load(runId);
      if (snap) {
        const reply = addReply(new Reply(snap, hooks), slot);
        follow(reply, snap.lastSeq);
        return;
      }
      try {
        const run = await api.run(runId);
        if (view !== state.view) return;
        if (run.status === "queued" || run.status === "running") {
          follow(addReply(new Reply({ runId, threadId: thread.id, assistant: thread.assistant, input: run.input }, hooks), slot), 0);
        } else {
          addReply(Reply.fromRun(run, thread.assistant, hooks), slot);
        }
      } catch {
        slot.remove();
      }
    }),
  );
}

// -- sending -----------------------------------------------------------------------------------

async function sendMessage(text, files) {
  if (activeReply()) {
    showError({ title: "A reply is still being written", detail: "Wait for it to finish, or stop it first." });
    return false;
  }
  hideError();
  let thread = state.thread;
  let created = null;
  const bubble = userMessage(text, files);
  try {
    if (!thread) {
      thread = created = await api.createThread(els.assistant.value || "general");
      state.view += 1;
      setThread(thread);
      history.replaceState(null, "", `#/t/${encodeURIComponent(thread.id)}`);
      sidebar.upsert(thread);
      sidebar.setActive(thread.id);
    }
    els.messages.append(bubble);
    updateEmpty();
    scrollToEnd(true);
    const run = await api.startRun(thread.id, text, files.length ? { files: files.map((f) => f.id) } : undefined);
    const reply = addReply(new Reply({ runId: run.id, threadId: thread.id, assistant: thread.assistant, input: text }, hooks));
    snapshots.save(reply.snapshot());
    channel?.postMessage({ type: "run", threadId: thread.id, run: { id: run.id, input: text } });
    follow(reply, 0);
    scrollToEnd(true);
    if (!thread.title) refreshThread(thread.id);
    return true;
  } catch (error) {
    bubble.remove();
    if (created) discardThread(created.id);
    updateEmpty();
    showError(error);
    return false;
  }
}

// A new chat whose first message was refused (rate limit, budget) leaves no empty conversation behind.
function discardThread(id) {
  api.deleteThread(id).then(() => channel?.postMessage({ type: "deleted", threadId: id }), () => {});
  sidebar.remove(id);
  if (state.thread?.id !== id) return;
  state.view += 1;
  setThread(null);
  sidebar.setActive(null);
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
}

async function refreshThread(id) {
  try {
    const thread = await api.thread(id);
    sidebar.upsert(thread);
    if (state.thread?.id === id) setThread(thread);
    channel?.postMessage({ type: "threads" });
  } catch {
    // the list refreshes on the next load
  }
}

const composer = new Composer(
  {
    form: $("composer"),
    input: $("composer-input"),
    send: $("send"),
    stop: $("stop"),
    attach: $("attach"),
    fileInput: $("file-input"),
    attachments: $("attachments"),
  },
  { onSubmit: sendMessage, onStop: stop, onError: showError },
);

// -- other tabs ----------------------------------------------------------------------------------

channel?.addEventListener("message", ({ data }) => {
  if (data.type === "threads") loadThreads();
  else if (data.type === "deleted") {
    sidebar.remove(data.threadId);
    if (state.thread?.id === data.threadId) newChat();
  } else if (data.type === "run" && state.thread?.id === data.threadId && !state.replies.has(data.run.id)) {
    els.messages.append(userMessage(data.run.input));
    follow(addReply(new Reply({ runId: data.run.id, threadId: data.threadId, assistant: state.thread.assistant, input: data.run.input }, hooks)), 0);
    scrollToEnd();
  }
});

document.addEventListener("visibilitychange", async () => {
  if (document.visibilityState === "hidden") {
    flushSaves();
    return;
  }
  loadThreads();
  const thread = state.thread;
  if (!thread || activeReply()) return;
  try {
    const messages = await api.messages(thread.id);
    const unseen = messages.some((m) => m.run_id && !state.replies.has(m.run_id));
    if (state.thread?.id === thread.id && unseen && !activeReply()) openThread(thread.id);
  } catch {
    // shown on the next action
  }
});

window.addEventListener("pagehide", flushSaves);

// -- keyboard and routing --------------------------------------------------------------------------

document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape" || e.defaultPrevented) return;
  if (document.querySelector("dialog[open]")) return;
  if (document.body.classList.contains("drawer-open")) {
    setDrawer(false);
    return;
  }
  if (activeReply()) {
    e.preventDefault();
    stop();
  }
});

$("new-chat").addEventListener("click", () => {
  setDrawer(false);
  newChat();
});
$("banner-close").addEventListener("click", hideError);

function route() {
  const match = location.hash.match(/^#\/t\/([^/?#]+)/);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (id && id === state.thread?.id) return;
  setDrawer(false);
  if (id) openThread(id);
  else newChat();
}

window.addEventListener("hashchange", route);

onApiError((error) => {
  if (error.status !== 401 || els.signin.open) return;
  const refused = $("signin-error");
  refused.textContent = apiKey() ? `The key saved in this browser was refused: ${error.message}.` : "";
  refused.hidden = !apiKey();
  els.signin.showModal();
});

els.signin.addEventListener("close", () => {
  if (els.signin.returnValue === "save") {
    setApiKey($("api-key").value.trim());
    location.reload();
  }
});

async function start() {
  applyThemeLabel();
  await loadAssistants();
  loadThreads();
  route();
  document.body.dataset.ready = "true";
}

start();
