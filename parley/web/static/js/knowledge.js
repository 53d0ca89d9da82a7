// The knowledge panel: the documents an assistant answers from, uploads (many files, zip or tar
// archives) through the batch-ingest job with its progress, and deletion.

import { api, ApiError, describeError } from "./api.js";
import { formatBytes, h, icon } from "./dom.js";
import { uploadFiles } from "./upload.js";

const POLL_MS = 600;

export class KnowledgePanel {
  constructor(els, { announce }) {
    this.els = els;
    this.announce = announce;
    this.assistant = null;
    this.bases = new Map(); // name -> knowledge base, the caller's own
    this.name = null; // the knowledge base shown
    this.busy = false;
    els.open.addEventListener("click", () => this.show());
    els.close.addEventListener("click", () => els.dialog.close());
    els.add.addEventListener("click", () => els.files.click());
    els.files.addEventListener("change", () => {
      const files = [...els.files.files];
      els.files.value = "";
      if (files.length) this.upload(files);
    });
    els.base.addEventListener("change", () => {
      this.name = els.base.value;
      this.refresh();
    });
  }

  // The assistant the page talks to now: the button shows when it answers from knowledge bases.
  setAssistant(assistant) {
    this.assistant = assistant ?? null;
    const names = assistant?.knowledge_bases ?? [];
    this.els.open.hidden = names.length === 0;
    if (!names.includes(this.name)) this.name = names[0] ?? null;
  }

  async show() {
    const names = this.assistant?.knowledge_bases ?? [];
    if (!names.length) return;
    this.els.title.textContent = `${this.assistant.name}’s knowledge`;
    this.els.base.replaceChildren(...names.map((name) => h("option", { value: name, text: name })));
    this.els.base.value = this.name;
    this.els.baseField.hidden = names.length < 2;
    this.els.intro.textContent = names.length < 2 ? `Documents in the knowledge base “${this.name}”.` : "";
    if (!this.els.dialog.open) this.els.dialog.showModal();
    await this.refresh();
  }

  async loadBases() {
    const { data } = await api.knowledgeBases();
    this.bases = new Map(data.map((kb) => [kb.name, kb]));
  }

  async base({ create = false } = {}) {
    if (!this.bases.has(this.name)) await this.loadBases();
    if (!this.bases.has(this.name) && create) {
      try {
        const kb = await api.createKnowledgeBase(this.name);
        this.bases.set(kb.name, kb);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 409)) throw error;
        await this.loadBases(); // made meanwhile, elsewhere
      }
    }
    return this.bases.get(this.name) ?? null;
  }

  async refresh() {
    try {
      const kb = await this.base();
      const docs = kb ? (await api.documents(kb.id)).data : [];
      this.render(kb, docs);
    } catch (error) {
      this.status(describeError(error).detail, "error");
    }
  }

  render(kb, docs) {
    this.els.empty.hidden = docs.length > 0;
    this.els.table.hidden = docs.length === 0;
    this.els.docs.replaceChildren(...docs.map((doc) => this.row(kb, doc)));
  }

  row(kb, doc) {
    const state =
      doc.status === "processing"
        ? h("span", { class: "kb-state kb-processing", text: `Processing ${doc.progress} %` })
        : doc.status === "failed"
          ? h("span", { class: "kb-state kb-failed", title: doc.error ?? "", text: "Failed" })
          : h("span", { class: "kb-state kb-ready", text: "Ready" });
    const actions = h("td", { class: "kb-actions" });
    const remove = h("button", {
      type: "button",
      class: "icon-btn small danger",
      "aria-label": `Delete ${doc.source}`,
      title: "Delete",
      onclick: () => this.confirm(kb, doc, actions, remove),
    }, icon("trash"));
    actions.append(remove);
    return h("tr", { dataset: { id: doc.id } },
      h("td", { class: "kb-name", title: doc.title }, h("span", { text: doc.source })),
      h("td", { class: "kb-num", text: formatBytes(doc.size) }),
      h("td", { class: "kb-num", text: String(doc.chunks) }),
      h("td", {}, state),
      actions,
    );
  }

  confirm(kb, doc, cell, button) {
    const keep = h("button", { type: "button", class: "btn kb-small", text: "Keep", onclick: () => cell.replaceChildren(button) });
    const sure = h("button", {
      type: "button",
      class: "btn btn-danger kb-small",
      text: "Delete",
      "aria-label": `Confirm: delete ${doc.source}`,
      onclick: async () => {
        sure.disabled = keep.disabled = true;
        try {
          await api.deleteDocument(kb.id, doc.id);
          this.announce(`${doc.source} deleted.`);
        } catch (error) {
          if (!(error instanceof ApiError && error.status === 404)) this.status(describeError(error).detail, "error");
        }
        await this.refresh();
      },
    });
    cell.replaceChildren(sure, keep);
    sure.focus();
  }

  status(text, kind = "", fraction = null) {
    this.els.progress.hidden = false;
    this.els.progress.dataset.state = kind;
    this.els.statusText.textContent = text;
    this.els.bar.hidden = fraction === null;
    if (fraction !== null) this.els.bar.value = Math.round(fraction * 100);
  }

  async upload(files) {
    if (this.busy) return;
    this.busy = true;
    this.els.add.disabled = true;
    this.els.skipped.replaceChildren();
    this.els.skipped.hidden = true;
    const count = files.length === 1 ? files[0].name : `${files.length} files`;
    try {
      const kb = await this.base({ create: true });
      this.status(`Uploading ${count}…`, "uploading", 0);
      const { promise } = uploadFiles(`v1/knowledge-bases/${encodeURIComponent(kb.id)}/documents/batch`, files, {
        onProgress: (f) => this.status(`Uploading ${count}… ${Math.round(f * 100)} %`, "uploading", f),
      });
      let job = await promise;
      while (job.status === "running") {
        this.status(`Adding documents: ${job.done} of ${job.total} files (${job.progress} %)`, "running", job.progress / 100);
        await this.refresh();
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        job = await api.job(kb.id, job.id);
      }
      await this.refresh();
      this.finish(job);
    } catch (error) {
      this.status(describeError(error).detail, "error");
    } finally {
      this.busy = false;
      this.els.add.disabled = false;
    }
  }

  finish(job) {
    const skipped = job.results.filter((r) => r.status === "skipped");
    const added = job.results.length - skipped.length;
    if (job.status !== "completed") {
      this.status(`The upload stopped: ${job.error ?? "unknown error"}`, "error", job.progress / 100);
    } else {
      const text = `Done: ${added} ${added === 1 ? "file" : "files"} added${skipped.length ? `, ${skipped.length} skipped` : ""}.`;
      this.status(text, "done", 1);
      this.announce(text);
    }
    if (skipped.length) {
      this.els.skipped.replaceChildren(...skipped.map((r) => h("li", {}, h("strong", { text: r.source }), `: ${r.error}`)));
      this.els.skipped.hidden = false;
    }
  }
}
