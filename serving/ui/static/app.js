// The fstore dashboard: polls /ui/api/overview every 2 s and /ui/api/drift every 10 s and
// renders them. Values go into the page as text nodes only (never as HTML): names and reasons
// come from configuration and from Kafka records.
"use strict";

const ROOT = document.body.dataset.root || "";
const OVERVIEW_EVERY_MS = 2000;
const DRIFT_EVERY_MS = 10000;
const TOKEN_KEY = "fstore.readToken";
const PLOT_CONFIG = { displaylogo: false, responsive: true };
// Legends above the plot: below it they cover the date line of the x axis.
const LEGEND = { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" };

class NeedsToken extends Error {}

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let timers = [];

// ---- fetching

async function getJSON(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(ROOT + path, { headers, cache: "no-store" });
  if (response.status === 401) {
    throw new NeedsToken((await response.json()).detail);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) {
      // not JSON: keep the status text
    }
    throw new Error(`${path}: ${response.status} ${detail}`);
  }
  return response.json();
}

function poll(path, everyMs, render) {
  const tick = async () => {
    try {
      render(await getJSON(path));
      setStatus(`updated ${new Date().toLocaleTimeString()}`, false);
    } catch (error) {
      if (error instanceof NeedsToken) {
        askForToken(error.message);
        return; // polling resumes once a token is given
      }
      setStatus(`could not refresh: ${error.message}`, true);
    }
    timers.push(setTimeout(tick, everyMs));
  };
  tick();
}

function start() {
  timers.forEach(clearTimeout);
  timers = [];
  document.getElementById("token-form").hidden = true;
  document.getElementById("content").hidden = false;
  poll("/ui/api/overview", OVERVIEW_EVERY_MS, renderOverview);
  poll("/ui/api/drift", DRIFT_EVERY_MS, renderDrift);
}

function askForToken(detail) {
  timers.forEach(clearTimeout);
  timers = [];
  document.getElementById("content").hidden = true;
  document.getElementById("token-form").hidden = false;
  document.getElementById("token-error").textContent = token ? detail : "";
  setStatus("needs an API key", true);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token-input").value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
});

// ---- small DOM helpers

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function table(id, headers, rows) {
  if (!rows.length) return el("p", { class: "empty", id, text: "none" });
  const head = el("tr", {}, headers.map((h) => el("th", { text: h })));
  const body = rows.map((cells) =>
    el(
      "tr",
      {},
      cells.map((cell) =>
        cell instanceof Node ? el("td", {}, cell) : el("td", { class: typeof cell === "number" ? "num" : "" }, cell ?? "–")
      )
    )
  );
  return el("table", { id }, [el("thead", {}, head), el("tbody", {}, body)]);
}

function badge(text) {
  return el("span", { class: `badge ${text}`, text });
}

function replace(id, ...nodes) {
  document.getElementById(id).replaceChildren(...nodes);
}

function sectionError(section) {
  return section.error ? el("p", { class: "error", text: section.error }) : null;
}

function setStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "muted";
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  return Number(value).toPrecision(digits);
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

// Plotly shows a date string's wall time and ignores its offset: give it local time, as the
// tables show.
function local(isoOrMs) {
  const date = new Date(isoOrMs);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 23);
}

// ---- overview: traffic, views, models, alerts

function renderOverview(data) {
  // Tables first: they need no chart library, and show even if its script failed to load.
  renderViews(data.views);
  renderModels(data.models);
  renderAlerts(data.alerts);
  renderTraffic(data.traffic, data.now);
}

function renderTraffic(traffic, now) {
  const totals = traffic.totals;
  const last = traffic.series.length ? traffic.series[traffic.series.length - 1] : null;
  const stat = (label, value) => el("div", {}, [el("b", { text: value }), label]);
  replace(
    "traffic-totals",
    stat("requests/s now", last ? fmt(last.rate) : "–"),
    stat("requests in total", totals.requests),
    stat("errors in total", totals.errors),
    stat("p50 since start", totals.p50_ms == null ? "–" : `${fmt(totals.p50_ms)} ms`),
    stat("p99 since start", totals.p99_ms == null ? "–" : `${fmt(totals.p99_ms)} ms`)
  );
  const at = traffic.series.map((p) => local(p.at));
  const end = Date.parse(now);
  const line = (name, key) => ({
    x: at,
    y: traffic.series.map((p) => p[key]),
    name,
    mode: "lines+markers",
    type: "scatter",
  });
  const layout = (unit) => ({
    height: 270,
    margin: { l: 50, r: 10, t: 40, b: 45 },
    // The last ten minutes (what the server keeps), so that the first points sit at the right.
    xaxis: { type: "date", range: [local(end - 600000), local(end + 15000)] },
    yaxis: { title: { text: unit }, rangemode: "tozero" },
    legend: LEGEND,
  });
  Plotly.react("rate-chart", [line("requests/s", "rate"), line("errors/s", "error_rate")], layout("requests per second"), PLOT_CONFIG);
  Plotly.react(
    "latency-chart",
    [line("p50", "p50_ms"), line("p95", "p95_ms"), line("p99", "p99_ms")],
    layout("latency (ms)"),
    PLOT_CONFIG
  );
}

function renderViews(section) {
  const rows = (section.data || []).map((v) => [
    v.name,
    v.version,
    v.topic,
    v.entities.join(", "),
    el("span", { title: v.features.join("\n"), text: String(v.features.length) }),
    when(v.watermark),
    ago(v.freshness_s),
    v.lag === null ? el("span", { class: "muted", title: v.lag_error || "", text: "unknown" }) : v.lag,
    v.ttl || "–",
  ]);
  replace(
    "views-body",
    ...[
      sectionError(section),
      table(
        "views-table",
        ["View", "Version", "Topic", "Entities", "Features", "Newest event", "Freshness", "Ingest lag (messages)", "TTL"],
        rows
      ),
    ].filter(Boolean)
  );
}

function renderModels(section) {
  const cards = (section.data || []).map((m) => {
    const aliasesOf = (version) =>
      Object.entries(m.aliases)
        .filter(([, v]) => v === version)
        .map(([alias]) => alias);
    const versions = m.versions
      .slice()
      .reverse()
      .map((v) => {
        const aliases = aliasesOf(v.version);
        const weight = aliases.reduce((sum, alias) => sum + (m.traffic[alias] || 0), 0);
        return [
          `v${v.version}`,
          aliases.join(", ") || "–",
          aliases.length ? `${Math.round(weight * 100)} %` : "–",
          `${v.primary_metric} ${fmt(v.metric, 4)}`,
          v.features,
          when(v.created_at),
          v.created_by,
          v.loaded ? "yes" : "no",
          v.rows_scored,
        ];
      });
    const history = m.history.map((h) => [
      when(h.at),
      h.who,
      h.action,
      h.alias || "–",
      h.from_version === null ? "–" : `v${h.from_version}`,
      h.to_version === null ? "–" : `v${h.to_version}`,
      h.reason || "",
    ]);
    const traffic = Object.entries(m.traffic)
      .map(([alias, w]) => `${alias} ${Math.round(w * 100)} %`)
      .join(" · ");
    return el("div", { class: "model-card", "data-model": m.name }, [
      el("h3", {}, [m.name, el("span", { class: "muted", text: `  traffic: ${traffic || "none"}` })]),
      m.load_error ? el("p", { class: "error", text: `not loaded: ${m.load_error}` }) : null,
      table(
        `versions-${m.name}`,
        ["Version", "Aliases", "Traffic", "Validation", "Features", "Created", "By", "Loaded here", "Rows scored"],
        versions
      ),
      el("h3", { text: "Audit history" }),
      table(`history-${m.name}`, ["When", "Who", "Action", "Alias", "From", "To", "Reason"], history),
    ]);
  });
  const empty = section.data && !section.data.length ? el("p", { class: "empty", text: "no models registered" }) : null;
  replace("models-body", ...[sectionError(section), empty, ...cards].filter(Boolean));
}

function statistics(window) {
  if (!window) return "–";
  return `psi ${fmt(window.psi)} · js ${fmt(window.js)} · ks ${fmt(window.ks)}`;
}

function renderAlerts(section) {
  const data = section.data || { open: [], recent: [] };
  const open = data.open.map((a) => [
    badge("open"),
    when(a.since),
    a.model,
    `v${a.version}`,
    a.role,
    a.kind,
    a.column,
    statistics(a.window),
  ]);
  const recent = data.recent.map((e) => [
    badge(e.event === "resolved" ? "resolved" : "alert"),
    when(e.window && e.window.window_end),
    e.model,
    `v${e.version}`,
    e.role,
    e.kind,
    e.column,
    statistics(e.window),
  ]);
  const headers = ["", "Since / at", "Model", "Version", "Role", "Kind", "Column", "Window"];
  replace(
    "alerts-body",
    ...[
      sectionError(section),
      el("h3", { text: "Open" }),
      table("alerts-open", headers, open),
      el("h3", { text: "Recent events" }),
      table("alerts-recent", headers, recent),
    ].filter(Boolean)
  );
}

// ---- drift

function renderDrift(data) {
  const section = data.models;
  const body = document.getElementById("drift-body");
  const models = section.data || {};
  const names = Object.keys(models);
  const keep = new Set(names);
  for (const child of Array.from(body.children)) {
    if (!keep.has(child.dataset.model)) child.remove();
  }
  if (section.error) body.prepend(el("p", { class: "error", "data-model": "", text: section.error }));
  if (!names.length && !section.error) {
    body.append(el("p", { class: "empty", "data-model": "", text: "the monitor has reported no drift yet" }));
  }
  for (const name of names) {
    let card = body.querySelector(`div[data-model="${CSS.escape(name)}"]`);
    if (!card) {
      card = el("div", { class: "model-card", "data-model": name }, [
        el("h3", { text: name }),
        el("div", { class: "chart drift-chart", id: `drift-chart-${name}` }),
        el("div", { class: "drift-latest" }),
      ]);
      body.append(card);
    }
    drawDrift(name, models[name], card);
  }
}

function drawDrift(name, model, card) {
  const series = new Map();
  for (const r of model.history) {
    if (r.kind !== "feature" && r.kind !== "score") continue;
    const key = `${r.column} (v${r.version} ${r.role})`;
    if (!series.has(key)) series.set(key, { x: [], y: [], text: [] });
    const s = series.get(key);
    s.x.push(local(r.window_end));
    s.y.push(r.psi);
    s.text.push(r.status);
  }
  const traces = Array.from(series, ([key, s]) => ({
    x: s.x,
    y: s.y,
    text: s.text,
    name: key,
    type: "scatter",
    mode: "lines+markers",
    hovertemplate: "%{y:.3f} (%{text})<extra>%{fullData.name}</extra>",
  }));
  const shapes = [];
  const thresholds = model.thresholds;
  if (thresholds) {
    for (const [value, color] of [[thresholds.psi_warn, "#b06000"], [thresholds.psi_alert, "#c5221f"]]) {
      shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: value, y1: value, line: { dash: "dash", width: 1, color } });
    }
  }
  Plotly.react(
    `drift-chart-${name}`,
    traces,
    {
      height: 300,
      margin: { l: 50, r: 10, t: 40, b: 45 },
      xaxis: { type: "date" },
      yaxis: { title: { text: "PSI" }, rangemode: "tozero" },
      legend: LEGEND,
      shapes,
    },
    PLOT_CONFIG
  );
  const latest = model.latest.map((r) => [
    r.column,
    r.kind,
    `v${r.version}`,
    r.role,
    when(r.window_end),
    r.n,
    fmt(r.psi),
    fmt(r.js),
    fmt(r.ks),
    badge(r.status),
  ]);
  card.querySelector(".drift-latest").replaceChildren(
    el("h3", { text: "Newest window" }),
    table(`drift-latest-${name}`, ["Column", "Kind", "Version", "Role", "Window end", "Rows", "PSI", "JS", "KS", "Status"], latest)
  );
}

start();
