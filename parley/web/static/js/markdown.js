// Markdown from models and documents, rendered safely, in two layers:
// 1. marked never passes raw HTML through: HTML in the text is shown as text, and images
//    become plain links (a remote image would load by itself and could leak the conversation).
// 2. DOMPurify then keeps only the tags Markdown produces and only http(s)/mailto links.
// The page's Content-Security-Policy is the third layer: no inline script can run at all.

import { Marked } from "../vendor/marked.esm.js";
import DOMPurify from "../vendor/purify.es.js";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    html(token) {
      return escapeHtml(token.text);
    },
    image(token) {
      const label = token.text || token.href;
      return `<a href="${escapeHtml(token.href)}">${escapeHtml(label)}</a>`;
    },
  },
});

const PURIFY = {
  ALLOWED_TAGS: [
    "a", "p", "br", "strong", "em", "del", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "table", "thead", "tbody", "tr", "th", "td", "input", "span", "sup", "sub",
  ],
  ALLOWED_ATTR: ["href", "title", "class", "start", "align", "type", "checked", "disabled"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    if (node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  } else if (node.tagName === "INPUT" && node.getAttribute("type") !== "checkbox") {
    node.remove();
  } else if (node.tagName === "INPUT") {
    node.setAttribute("disabled", "");
  }
});

export function renderMarkdown(text) {
  const html = marked.parse(String(text ?? ""), { async: false });
  return DOMPurify.sanitize(html, PURIFY);
}

// Render into an element, with a copy button on each code block.
export function renderInto(element, text) {
  element.replaceChildren(renderMarkdown(text));
  for (const pre of element.querySelectorAll("pre")) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy code");
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(pre.querySelector("code")?.textContent ?? pre.textContent);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
    pre.append(button);
  }
}
