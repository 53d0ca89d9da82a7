// The message box: Enter sends, Shift+Enter is a new line; files attach with progress.

import { describeError } from "./api.js";
import { formatBytes, h, icon } from "./dom.js";
import { upload } from "./upload.js";

let nextId = 1;

export class Composer {
  constructor(els, { onSubmit, onStop, onError }) {
    Object.assign(this, els);
    this.hooks = { onSubmit, onStop, onError };
    this.files = [];
    this.busy = false;
    this.input.addEventListener("input", () => this.autosize());
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        this.submit();
      }
    });
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.stop.addEventListener("click", () => this.hooks.onStop());
    this.attach.addEventListener("click", () => this.fileInput.click());
    this.fileInput.addEventListener("change", () => {
      this.addFiles([...this.fileInput.files]);
      this.fileInput.value = "";
    });
    this.form.addEventListener("dragover", (e) => {
      if (e.dataTransfer?.types.includes("Files")) {
        e.preventDefault();
        this.form.classList.add("dragging");
      }
    });
    this.form.addEventListener("dragleave", () => this.form.classList.remove("dragging"));
    this.form.addEventListener("drop", (e) => {
      this.form.classList.remove("dragging");
      if (e.dataTransfer?.files.length) {
        e.preventDefault();
        this.addFiles([...e.dataTransfer.files]);
      }
    });
  }

  autosize() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 220)}px`;
  }

  setBusy(busy) {
    this.busy = busy;
    this.send.hidden = busy;
    this.stop.hidden = !busy;
  }

  focus() {
    this.input.focus();
  }

  async submit() {
    if (this.busy) return;
    const text = this.input.value.trim();
    if (!text) return;
    if (this.files.some((f) => f.status === "uploading")) {
      this.hooks.onError({ title: "Upload in progress", detail: "Wait for your files to finish uploading, then send." });
      return;
    }
    const files = this.files.filter((f) => f.status === "done").map((f) => f.result);
    this.input.value = "";
    this.autosize();
    const keep = this.files;
    this.files = this.files.filter((f) => f.status === "error");
    this.renderFiles();
    const sent = await this.hooks.onSubmit(text, files);
    if (!sent) {
      if (!this.input.value) this.input.value = text;
      this.files = keep;
      this.renderFiles();
      this.autosize();
    }
  }

  addFiles(list) {
    for (const file of list) {
      const entry = { key: nextId++, name: file.name, size: file.size, status: "uploading", progress: 0, result: null, error: null };
      const { promise, abort } = upload(file, {
        onProgress: (p) => {
          entry.progress = p;
          this.updateProgress(entry);
        },
      });
      entry.abort = abort;
      promise.then(
        (result) => {
          Object.assign(entry, { status: "done", result: { id: result.id, name: result.name ?? file.name, size: result.size ?? file.size, type: result.type } });
          this.renderFiles();
        },
        (error) => {
          Object.assign(entry, { status: "error", error });
          this.renderFiles();
        },
      );
      this.files.push(entry);
    }
    this.renderFiles();
  }

  updateProgress(entry) {
    const bar = this.attachments.querySelector(`[data-key="${entry.key}"] .progress`);
    if (bar) {
      bar.value = entry.progress;
      bar.setAttribute("aria-valuetext", `${Math.round(entry.progress * 100)}%`);
    }
  }

  renderFiles() {
    this.attachments.replaceChildren(...this.files.map((f) => this.chip(f)));
    this.attachments.hidden = this.files.length === 0;
  }

  chip(entry) {
    const remove = h("button", { type: "button", class: "icon-btn tiny", "aria-label": `Remove ${entry.name}` }, icon("close"));
    remove.addEventListener("click", () => {
      if (entry.status === "uploading") entry.abort?.();
      this.files = this.files.filter((f) => f !== entry);
      this.renderFiles();
    });
    const parts = [icon("file"), h("span", { class: "file-name", text: entry.name }), h("span", { class: "file-size muted", text: formatBytes(entry.size) })];
    if (entry.status === "uploading") {
      parts.push(h("progress", { class: "progress", max: "1", value: String(entry.progress), "aria-label": `Uploading ${entry.name}` }));
    }
    const chip = h("li", { class: `file-chip upload-${entry.status}`, dataset: { key: String(entry.key) } }, ...parts, remove);
    if (entry.status === "error") {
      const { title, detail } = describeError(entry.error);
      chip.append(h("p", { class: "file-error", role: "alert", text: `${title}: ${detail}` }));
    }
    return chip;
  }
}
