// The dashboard: experiments (per-variant rates with intervals, split, latency, cost) and usage.
// A reader of GET /v1/experiments, /v1/experiments/{key}/results and /v1/usage, like any client.

import { ApiError, describeError, request } from "./api.js";
import { barChart, columnChart, compact, intervalChart, splitChart } from "./charts.js";
import { formatMs, h, icon } from "./dom.js";
import { prefs } from "./store.js";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const state = { experiments: [], selected: null, results: null, usage: null, models: null, days: 30 };

// -- formatting ------------------------------------------------------------------------------

const percent = (v) => (Number.isFinite(v) ? `${(v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0)}%` : "–");
const money = (v) => {
  if (!Number.isFinite(v)) return "–";
  if (v === 0) return "$0";
  const digits = v < 0.01 ? 4 : v < 1 ? 3 : 2;
  return `$${v.toFixed(digits)}`;
};
const pValue = (p) => (!Number.isFinite(p) ? "–" : p < 0.001 ? "p < 0.001" : `p = ${p.toFixed(p < 0.01 ? 3 : 2)}`);
const plural = (n, word) => `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
const day = (iso) => new Date(`${iso}T00:00:00Z`).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

function width(box) {
  return Math.max(260, Math.floor(box.clientWidth));
}

function draw(id, chart) {
  $(id).replaceChildren(chart);
}

function banner(error) {
  if (!error) {
    $("banner").hidden = true;
    return;
  }
  const { title, detail } = describeError(error);
  $("banner-title").textContent = title;
  $("banner-text").textContent =
    error instanceof ApiError && error.status === 401 ? `${detail} Open the chat page to enter an API key.` : detail;
  $("banner").hidden = false;
}

// -- experiments -----------------------------------------------------------------------------

async function loadExperiments() {
  try {
    state.experiments = (await request("GET", "v1/experiments")).data;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      showNote("Experiments are visible to administrators.");
      return;
    }
    throw error;
  }
  if (!state.experiments.length) {
    showNote("No experiments yet. Define one under [experiments.NAME] in the config file, or POST /v1/experiments.");
    return;
  }
  const wanted = decodeURIComponent(location.hash.replace(/^#\/e\//, ""));
  const running = state.experiments.find((e) => e.status === "running");
  const first = state.experiments.find((e) => e.key === wanted) ?? running ?? state.experiments[0];
  renderPicker();
  await select(first.key);
}

function showNote(text) {
  $("experiments-note").textContent = text;
  $("experiments-note").hidden = false;
  $("experiment").hidden = true;
}

function renderPicker() {
  $("experiment-picker").replaceChildren(
    ...state.experiments.map((e) =>
      h("button", {
        type: "button",
        role: "tab",
        class: "chip",
        "aria-selected": String(e.key === state.selected),
        title: `${e.key}: ${e.status}`,
        onclick: () => select(e.key),
      }, h("span", { class: `status-dot ${e.status}`, "aria-hidden": "true" }), e.key),
    ),
  );
}

async function select(key) {
  state.selected = key;
  history.replaceState(null, "", `#/e/${enc(key)}`);
  renderPicker();
  state.results = await request("GET", `v1/experiments/${enc(key)}/results`);
  renderExperiment();
}

function renderExperiment() {
  const r = state.results;
  const e = state.experiments.find((x) => x.key === state.selected);
  if (!r || !e) return;
  $("experiment").hidden = false;
  const series = new Map(e.variants.map((v, i) => [v.name, i % 6]));
  for (const v of r.variants) if (!series.has(v.name)) series.set(v.name, series.size % 6);
  const since = e.started_at ? new Date(e.started_at).toLocaleDateString() : null;
  $("experiment-summary").replaceChildren(
    h("h3", { text: e.key }),
    h("p", { class: "facts" },
      h("span", {}, "Status ", h("b", { text: e.status })),
      h("span", {}, "Assistant ", h("b", { text: e.assistant })),
      h("span", {}, "Control ", h("b", { text: e.control })),
      since ? h("span", {}, e.status === "running" ? "Running since " : "Started ", h("b", { text: since })) : null,
      h("span", {}, h("b", { text: r.variants.reduce((n, v) => n + v.users, 0).toLocaleString() }), " users"),
    ),
    e.description ? h("p", { class: "description", text: e.description }) : null,
  );
  renderSrm(r.srm);

  const control = r.variants.find((v) => v.control);
  const box = $("chart-rates");
  draw("chart-rates", intervalChart({
    width: width(box),
    rows: r.variants.map((v) => ({
      label: v.name + (v.control ? " (control)" : ""),
      note: `${plural(v.rated, "rating")}${v.vs_control ? ` · ${pValue(v.vs_control.p_value)}` : ""}`,
      value: v.thumbs_up_rate,
      low: v.interval?.[0],
      high: v.interval?.[1],
      series: series.get(v.name),
      strong: v.control,
    })),
    reference: control?.thumbs_up_rate,
    format: percent,
    summary: `Thumbs-up rate per variant: ${r.variants.map((v) => `${v.name} ${percent(v.thumbs_up_rate)}`).join(", ")}`,
  }));
  const comparisons = Math.max(1, r.variants.filter((v) => !v.control && v.weight !== null).length);
  $("verdicts").replaceChildren(
    ...r.variants.filter((v) => !v.control).map((v) => verdict(v, control, series, r.alpha / comparisons)),
  );

  const observed = r.variants.filter((v) => v.weight !== null);
  $("split-counts").replaceChildren(...observed.map((v) => h("li", {},
    h("span", { class: `swatch series-${series.get(v.name)}`, "aria-hidden": "true" }),
    h("b", { text: v.name }),
    ` ${plural(v.users, "user")} · ${plural(v.exposures, "answer")} · planned ${percent(r.srm.expected_share[v.name])}`,
  )));
  draw("chart-split", splitChart({
    width: width($("chart-split")),
    bars: [
      { label: "Observed", parts: observed.map((v) => ({ name: v.name, value: v.users, count: v.users, series: series.get(v.name) })) },
      { label: "Planned", parts: observed.map((v) => ({ name: v.name, value: r.srm.expected_share[v.name], series: series.get(v.name) })) },
    ],
    summary: `Users per variant: ${observed.map((v) => `${v.name} ${v.users}`).join(", ")}`,
  }));

  const legend = [{ label: "mean", kind: "solid" }, { label: "p95", kind: "soft" }];
  for (const [id, key, what] of [["chart-latency", "latency_ms", "Latency"], ["chart-ttft", "ttft_ms", "Time to first token"]]) {
    draw(id, barChart({
      width: width($(id)),
      legend,
      rows: r.variants.map((v) => ({
        label: v.name,
        series: series.get(v.name),
        bars: [
          { value: v[key].mean ?? NaN, kind: "solid", tip: `${v.name}: mean ${formatMs(v[key].mean)}` },
          { value: v[key].p95 ?? NaN, kind: "soft", tip: `${v.name}: p95 ${formatMs(v[key].p95)}` },
        ],
      })),
      format: formatMs,
      summary: `${what} per variant: ${r.variants.map((v) => `${v.name} mean ${formatMs(v[key].mean)}, p95 ${formatMs(v[key].p95)}`).join("; ")}`,
    }));
  }
  draw("chart-cost", barChart({
    width: width($("chart-cost")),
    legend: [{ label: "per answer", kind: "solid" }, { label: "per thumbs-up", kind: "soft" }],
    rows: r.variants.map((v) => ({
      label: v.name,
      series: series.get(v.name),
      bars: [
        { value: v.cost_usd.per_run ?? NaN, kind: "solid", tip: `${v.name}: ${money(v.cost_usd.per_run)} per answer` },
        { value: v.cost_usd.per_positive_rating ?? NaN, kind: "soft", tip: `${v.name}: ${money(v.cost_usd.per_positive_rating)} per thumbs-up` },
      ],
    })),
    format: money,
    summary: `Cost per answer: ${r.variants.map((v) => `${v.name} ${money(v.cost_usd.per_run)}`).join(", ")}`,
  }));

  const fell = r.variants.filter((v) => v.fallback.runs);
  $("fallback-note").textContent = fell.length
    ? `Not counted above: ${fell.map((v) => `${plural(v.fallback.runs, "answer")} of ${v.name}`).join(", ")} came (partly) from a fallback provider after the variant's model failed.`
    : "";
}

function verdict(v, control, series, alpha) {
  const swatch = h("span", { class: `swatch series-${series.get(v.name)}`, "aria-hidden": "true" });
  const test = v.vs_control;
  if (!test || v.rated < 10 || (control?.rated ?? 0) < 10) {
    return h("li", {}, swatch, h("b", { text: v.name }), h("span", { class: "muted", text: "— too few ratings to compare yet." }));
  }
  const points = Math.abs(test.difference * 100).toFixed(1);
  if (!test.significant) {
    const needed = test.p_value < 0.05 ? `; with several variants, clear means p < ${+alpha.toPrecision(2)}` : "";
    return h("li", {}, swatch, h("b", { text: v.name }),
      h("span", { text: `— no clear difference from ${control.name} yet (${test.difference >= 0 ? "+" : "−"}${points} points, ${pValue(test.p_value)}${needed}).` }));
  }
  const better = test.difference > 0;
  return h("li", {}, swatch, h("b", { text: v.name }),
    h("span", { class: better ? "better" : "worse", text: better ? "liked more" : "liked less" }),
    h("span", { text: `than ${control.name}: ${better ? "+" : "−"}${points} points (${pValue(test.p_value)}).` }));
}

function renderSrm(srm) {
  const box = $("srm");
  if (srm.mismatch === true) {
    box.className = "callout bad";
    box.replaceChildren(icon("warn"), h("div", {},
      h("strong", { text: "Sample ratio mismatch. " }),
      `The users per variant do not match the planned split (χ² = ${srm.chi_square.toFixed(1)}, ${pValue(srm.p_value)}). `,
      "Something is skewing who gets which variant; do not trust these results until it is found."));
  } else if (srm.mismatch === false) {
    box.className = "callout ok";
    box.replaceChildren(icon("check"), h("div", {},
      h("strong", { text: "The split looks healthy. " }), `Users per variant match the planned weights (${pValue(srm.p_value)}).`));
  } else {
    box.className = "callout unknown";
    box.replaceChildren(icon("info"), h("div", {}, "Too few users yet to check the split against the planned weights."));
  }
}

// -- usage -----------------------------------------------------------------------------------

async function loadUsage() {
  const from = new Date(Date.now() - (state.days - 1) * 86400_000).toISOString().slice(0, 10);
  const [byDay, byModel] = await Promise.all([
    request("GET", `v1/usage?group_by=day&from=${from}`),
    request("GET", `v1/usage?group_by=assistant,model&from=${from}`),
  ]);
  state.usage = byDay;
  state.models = byModel;
  renderUsage();
}

function renderUsage() {
  const u = state.usage;
  if (!u) return;
  const t = u.totals;
  const tile = (labelText, value, sub) =>
    h("div", { class: "tile" }, h("div", { class: "tile-label", text: labelText }), h("div", { class: "tile-value", text: value }), h("div", { class: "tile-sub", text: sub }));
  $("usage-tiles").replaceChildren(
    tile("Answers", t.runs.toLocaleString(), t.failed ? `${t.failed} failed` : "none failed"),
    tile("Tokens", compact(t.input_tokens + t.output_tokens), `${compact(t.input_tokens)} in · ${compact(t.output_tokens)} out`),
    tile("Cost", money(t.cost_usd), t.runs ? `${money(t.cost_usd / Math.max(1, t.completed))} per answer` : "–"),
    tile("Latency p95", formatMs(t.latency_ms.p95), `mean ${formatMs(t.latency_ms.mean)}`),
  );
  const byDay = new Map(u.data.map((d) => [d.day, d]));
  const points = [];
  for (let i = state.days - 1; i >= 0; i -= 1) {
    const iso = new Date(Date.now() - i * 86400_000).toISOString().slice(0, 10);
    const d = byDay.get(iso);
    points.push({
      label: day(iso),
      stacks: [
        { name: "input tokens", value: d?.input_tokens ?? 0, series: 0 },
        { name: "output tokens", value: d?.output_tokens ?? 0, series: 1 },
      ],
    });
  }
  draw("chart-tokens", columnChart({
    width: width($("chart-tokens")),
    points,
    format: compact,
    legend: [{ label: "input tokens", series: 0 }, { label: "output tokens", series: 1 }],
    summary: `Tokens per day over the last ${state.days} days: ${compact(t.input_tokens)} in, ${compact(t.output_tokens)} out`,
  }));
  const head = h("tr", {}, ["Assistant", "Model", "Answers", "Tokens in", "Tokens out", "Cost", "Latency p95", "First token p95"].map((x) => h("th", { scope: "col", text: x })));
  const rows = state.models.data.map((d) =>
    h("tr", {},
      h("td", { text: d.assistant }),
      h("td", { text: d.model }),
      h("td", { text: d.runs.toLocaleString() }),
      h("td", { text: d.input_tokens.toLocaleString() }),
      h("td", { text: d.output_tokens.toLocaleString() }),
      h("td", { text: money(d.cost_usd) }),
      h("td", { text: formatMs(d.latency_ms.p95) }),
      h("td", { text: formatMs(d.ttft_ms.p95) }),
    ));
  $("usage-table").replaceChildren(h("thead", {}, head), h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: "8", class: "muted", text: "No answers in this period." }))));
}

for (const chip of document.querySelectorAll("#period .chip")) {
  chip.addEventListener("click", () => {
    state.days = Number(chip.dataset.days);
    for (const other of document.querySelectorAll("#period .chip")) other.setAttribute("aria-pressed", String(other === chip));
    loadUsage().catch(banner);
  });
}

// -- page ------------------------------------------------------------------------------------

$("theme-toggle").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  prefs.set("theme", next);
});

// Charts are drawn at the size they are shown (crisp text at any width): redraw when the width changes.
let drawnWidth = 0;
let pending = 0;
new ResizeObserver(([entry]) => {
  const now = Math.round(entry.contentRect.width);
  if (now === drawnWidth) return;
  drawnWidth = now;
  cancelAnimationFrame(pending);
  pending = requestAnimationFrame(() => {
    renderExperiment();
    renderUsage();
  });
}).observe($("dash"));

Promise.all([loadExperiments(), loadUsage()])
  .catch(banner)
  .finally(() => {
    document.body.dataset.ready = "true";
  });
