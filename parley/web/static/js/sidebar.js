// The conversation list: open, rename in place, delete (after a confirmation the app asks).

import { h, icon } from "./dom.js";

export class Sidebar {
  constructor({ list, more, empty }, { onRename, onDelete, onMore }) {
    this.list = list;
    this.more = more;
    this.empty = empty;
    this.hooks = { onRename, onDelete };
    this.threads = [];
    this.activeId = null;
    more.addEventListener("click", () => onMore(this.threads.at(-1)?.id));
  }

  set(threads, hasMore) {
    this.threads = threads;
    this.hasMore = hasMore;
    this.render();
  }

  add(threads, hasMore) {
    const known = new Set(this.threads.map((t) => t.id));
    this.threads.push(...threads.filter((t) => !known.has(t.id)));
    this.hasMore = hasMore;
    this.render();
  }

  upsert(thread) {
    const index = this.threads.findIndex((t) => t.id === thread.id);
    if (index >= 0) this.threads[index] = thread;
    else this.threads.unshift(thread);
    this.render();
  }

  remove(id) {
    this.threads = this.threads.filter((t) => t.id !== id);
    this.render();
  }

  setActive(id) {
    this.activeId = id;
    for (const item of this.list.children) {
      const active = item.dataset.threadId === id;
      item.classList.toggle("active", active);
      const link = item.querySelector(".thread-link");
      if (active) link?.setAttribute("aria-current", "page");
      else link?.removeAttribute("aria-current");
    }
  }

  render() {
    this.list.replaceChildren(...this.threads.map((t) => this.item(t)));
    this.empty.hidden = this.threads.length > 0;
    this.more.hidden = !this.hasMore;
    this.setActive(this.activeId);
  }

  item(thread) {
    const title = thread.title || "New conversation";
    const link = h("a", { class: "thread-link", href: `#/t/${encodeURIComponent(thread.id)}`, title }, h("span", { class: "thread-title-text", text: title }));
    const rename = h("button", { type: "button", class: "icon-btn small", "aria-label": `Rename “${title}”`, title: "Rename" }, icon("pencil"));
    const remove = h("button", { type: "button", class: "icon-btn small danger", "aria-label": `Delete “${title}”`, title: "Delete" }, icon("trash"));
    const item = h("li", { class: "thread-item", dataset: { threadId: thread.id } }, link, h("div", { class: "thread-actions" }, rename, remove));
    rename.addEventListener("click", () => this.startRename(item, thread));
    remove.addEventListener("click", () => this.hooks.onDelete(thread));
    return item;
  }

  startRename(item, thread) {
    const link = item.querySelector(".thread-link");
    const input = h("input", { class: "rename-input", type: "text", value: thread.title ?? "", maxlength: "300", "aria-label": "Conversation title" });
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== thread.title) {
        input.disabled = true;
        try {
          await this.hooks.onRename(thread, title);
          return;
        } catch {
          // the app has shown the error; fall back to the old title
        }
      }
      this.render();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        finish(true);
      } else if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        finish(false);
      }
    });
    input.addEventListener("blur", () => finish(true));
    link.replaceWith(input);
    input.focus();
    input.select();
  }
}
