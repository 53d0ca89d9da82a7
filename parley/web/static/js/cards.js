// Rich results: tool.result `ui` payloads as cards, and citations. Shapes: docs/UI.md.

import { formatMoney, h, icon, safeUrl } from "./dom.js";

// Returns an element for a `ui` payload, or null for a type this page does not know.
export function renderUi(ui, { send }) {
  if (!ui || typeof ui !== "object") return null;
  switch (ui.type) {
    case "product":
      return productWithRelated(ui, send);
    case "products":
    case "product_list":
      return productList(ui, send);
    case "cart":
      return cartSummary(ui);
    default:
      return null;
  }
}

function stockBadge(stock) {
  if (stock === null || stock === undefined) return null;
  const n = Number(stock);
  if (!Number.isFinite(n)) return null;
  if (n <= 0) return h("span", { class: "badge badge-out", text: "Out of stock" });
  if (n <= 5) return h("span", { class: "badge badge-low", text: `Only ${n} left` });
  return h("span", { class: "badge badge-in", text: "In stock" });
}

// `stock` (docs/UI.md) or the shop's `stock_quantity` / `in_stock`.
function stockOf(product) {
  const n = product.stock ?? product.stock_quantity;
  if (n !== null && n !== undefined) return n;
  return product.in_stock === false ? 0 : null;
}

function addToCartAction(product) {
  const actions = Array.isArray(product.actions) ? product.actions : [];
  const custom = actions.find((a) => a && typeof a.send === "string" && typeof a.label === "string");
  if (custom) return custom;
  return { label: "Add to cart", send: `Add ${product.name ?? "this product"} (product ${product.id}) to my cart.` };
}

function productCard(product, { send, currency, compact = false }) {
  const name = String(product.name ?? "Product");
  const image = safeUrl(product.image_url ?? product.image);
  const action = addToCartAction(product);
  const stock = stockOf(product);
  const soldOut = stock !== null && Number(stock) <= 0;
  const meta = [product.category, product.brand].filter((v) => typeof v === "string" && v).join(" · ");
  const rating = Number(product.rating);
  const button = h(
    "button",
    {
      type: "button",
      class: "btn btn-primary add-to-cart",
      disabled: soldOut,
      "aria-label": `${action.label}: ${name}`,
      onclick: () => {
        button.disabled = true;
        button.replaceChildren(icon("check"), "Requested");
        send(action.send);
      },
    },
    icon("cart"),
    action.label,
  );
  return h(
    "article",
    { class: `card product-card${compact ? " compact" : ""}`, "aria-label": name, dataset: { productId: product.id ?? "" } },
    image
      ? h("img", { class: "product-image", src: image, alt: "", loading: "lazy", referrerpolicy: "no-referrer" })
      : compact ? null : h("div", { class: "product-image placeholder", "aria-hidden": "true" }, icon("cart")),
    h(
      "div",
      { class: "product-body" },
      h("h3", { class: "product-name", text: name }),
      meta ? h("p", { class: "product-meta", text: meta }) : null,
      Number.isFinite(rating) && rating > 0 ? h("p", { class: "product-rating", "aria-label": `Rated ${rating} out of 5`, text: `★ ${rating.toFixed(1)}` }) : null,
      product.description && !compact ? h("p", { class: "product-desc", text: String(product.description) }) : null,
      h(
        "div",
        { class: "product-foot" },
        h("span", { class: "price", text: formatMoney(product.price, product.currency ?? currency) }),
        stockBadge(stock),
      ),
      button,
    ),
  );
}

function productWithRelated(ui, send) {
  const card = productCard(ui.product ?? {}, { send, currency: ui.currency });
  const related = Array.isArray(ui.recommendations) ? ui.recommendations : [];
  if (!related.length) return card;
  return h("div", { class: "card-stack" }, card, productList({ items: related, title: "You may also like", currency: ui.currency }, send));
}

function productList(ui, send) {
  const items = Array.isArray(ui.items) ? ui.items : Array.isArray(ui.products) ? ui.products : [];
  const title = ui.title ?? (items.length === 1 ? "1 product" : `${items.length} products`);
  return h(
    "section",
    { class: "card-group", "aria-label": String(title) },
    h("h3", { class: "card-group-title", text: String(title) }),
    items.length
      ? h("div", { class: "product-grid" }, items.map((p) => productCard(p ?? {}, { send, currency: ui.currency, compact: true })))
      : h("p", { class: "muted", text: "No products matched." }),
  );
}

function cartSummary(ui) {
  const items = Array.isArray(ui.items) ? ui.items : [];
  const currency = ui.currency;
  const summary = ui.summary && typeof ui.summary === "object" ? ui.summary : {};
  const rows = items.map((item) => {
    const quantity = Number(item.quantity ?? 1);
    const line = item.line_total ?? item.total_price ?? (Number(item.price ?? item.unit_price) * quantity);
    return h(
      "tr",
      {},
      h("td", { class: "cart-name", text: String(item.name ?? item.product_name ?? item.product_id ?? item.id ?? "Item") }),
      h("td", { class: "cart-qty", text: `× ${quantity}` }),
      h("td", { class: "cart-price", text: formatMoney(line, item.currency ?? currency) }),
    );
  });
  const count = Number(summary.total_items ?? items.reduce((n, item) => n + Number(item.quantity ?? 1), 0));
  const total = ui.total ?? summary.estimated_total ?? summary.subtotal;
  const foot = [];
  const hasTax = summary.estimated_tax !== undefined && summary.estimated_tax !== null && ui.total === undefined;
  if (hasTax) {
    foot.push(h("tr", { class: "cart-sub" }, h("th", { scope: "row", colspan: "2", text: "Subtotal" }), h("td", { class: "cart-subtotal", text: formatMoney(summary.subtotal, currency) })));
    foot.push(h("tr", { class: "cart-sub" }, h("th", { scope: "row", colspan: "2", text: "Estimated tax" }), h("td", { class: "cart-tax", text: formatMoney(summary.estimated_tax, currency) })));
  }
  foot.push(h("tr", {}, h("th", { scope: "row", colspan: "2", text: hasTax ? "Estimated total" : "Total" }), h("td", { class: "cart-total", text: formatMoney(total, currency) })));
  return h(
    "section",
    { class: "card cart-card", "aria-label": "Cart" },
    h("h3", { class: "cart-title" }, icon("cart"), "Your cart", h("span", { class: "muted", text: ` · ${count} ${count === 1 ? "item" : "items"}` })),
    items.length
      ? h("table", { class: "cart-table" }, h("tbody", {}, rows), h("tfoot", {}, foot))
      : h("p", { class: "muted", text: "Your cart is empty." }),
    items.length ? cartHold(summary.reserved_until) : null,
  );
}

// Until when the cart holds its items' stock (the server gives it back after that, unless the cart changes).
function cartHold(until) {
  const at = new Date(Number(until) * 1000);
  if (until === undefined || until === null || Number.isNaN(at.getTime())) return null;
  const label = at.toLocaleString(undefined, { hour: "2-digit", minute: "2-digit", month: "short", day: "numeric" });
  return h("p", { class: "muted cart-hold" }, "Held for you until ", h("time", { datetime: at.toISOString(), text: label }));
}

// Citations: title and snippet of each source a reply drew on.
export function sourceSnippet(source) {
  // `chunk` is the chunk's id, not its text: never shown.
  const text = [source.snippet, source.text, source.content].find((v) => typeof v === "string" && v.trim());
  if (!text) return "";
  const clean = text.replace(/\s+/g, " ").trim();
  return clean.length > 280 ? `${clean.slice(0, 277)}…` : clean;
}

export function renderSources(sources) {
  if (!sources.length) return null;
  return h(
    "section",
    { class: "sources", "aria-label": "Sources" },
    h("h4", { class: "sources-title" }, icon("book"), "Sources"),
    h(
      "ol",
      { class: "source-list" },
      sources.map((source, i) => {
        const title = String(source.title || source.document || `Source ${i + 1}`);
        const link = safeUrl(source.url);
        const snippet = sourceSnippet(source);
        const page = source.page ?? source.metadata?.page;
        return h(
          "li",
          { class: "source" },
          h("span", { class: "source-num", "aria-hidden": "true", text: String(i + 1) }),
          h(
            "div",
            { class: "source-body" },
            link
              ? h("a", { class: "source-title", href: link, target: "_blank", rel: "noopener noreferrer nofollow", text: title })
              : h("span", { class: "source-title", text: title }),
            page !== undefined && page !== null ? h("span", { class: "muted", text: ` · p. ${page}` }) : null,
            snippet ? h("p", { class: "source-snippet", text: snippet }) : null,
          ),
        );
      }),
    ),
  );
}
