// Clarion analytics dashboard: fetches the admin API and draws inline SVG charts.
// No external resources; every text from the API is set with textContent (never as HTML).
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const REFRESH_MS = 15000;
const CHANNEL_LABEL = { in_app: "in-app", push: "push", email: "email", "*": "all" };
const STAGE_LABEL = {
  notification_to_delivery: "notification → delivered",
  event_to_notification: "event → notification",
  ingest_to_notification: "ingest → notification",
};
const state = { token: sessionStorage.getItem("clarion-analytics-token"), latencyKey: null };

// ---- small DOM / SVG builders -------------------------------------------------------------

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgRoot(name, width, height) {
  return svgEl("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart-svg",
    "data-chart": name,
    role: "img",
    "aria-label": name,
  });
}

function empty(container, message) {
  container.replaceChildren(el("div", { class: "empty" }, message));
}

function fmtInt(n) {
  return Number(n).toLocaleString("en-US");
}

function fmtPct(x) {
  return x === null || x === undefined ? "–" : `${(100 * x).toFixed(1)}%`;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms >= 60000) return `${(ms / 60000).toFixed(1)} min`;
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 10) return `${ms.toFixed(0)} ms`;
  return `${ms.toFixed(1)} ms`;
}

function fmtTime(iso, stepSeconds) {
  const d = new Date(iso);
  if (stepSeconds >= 86400) return d.toISOString().slice(5, 10);
  return d.toISOString().slice(11, 16);
}

function niceMax(value) {
  if (value <= 0) return 1;
  const exp = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * exp >= value) return m * exp;
  return 10 * exp;
}

// ---- charts -------------------------------------------------------------------------------

// Horizontal bars: items = [{label, value, note, bad}]
function barChart(container, name, items, opts = {}) {
  if (!items.length) return empty(container, opts.emptyText || "no data in this range");
  const rowH = opts.rowHeight || 30;
  const labelW = opts.labelWidth || 130;
  const width = 600;
  const height = items.length * rowH + 8;
  const max = Math.max(1, ...items.map((i) => i.value));
  const barW = width - labelW - (opts.noteWidth || 150);
  const svg = svgRoot(name, width, height);
  items.forEach((item, idx) => {
    const y = idx * rowH + 4;
    svg.append(svgEl("text", { x: labelW - 8, y: y + rowH / 2 + 4, "text-anchor": "end" }, item.label));
    const w = Math.max(item.value > 0 ? 2 : 0, (barW * item.value) / max);
    svg.append(
      svgEl("rect", {
        class: item.bad ? "bar bad" : "bar",
        x: labelW,
        y: y + 4,
        width: w.toFixed(1),
        height: rowH - 10,
        rx: 3,
        fill: item.color || (item.bad ? "#d9434b" : "#3b6fe0"),
      }),
    );
    const caption = item.note ? `${fmtInt(item.value)}  ·  ${item.note}` : fmtInt(item.value);
    svg.append(svgEl("text", { x: labelW + w + 8, y: y + rowH / 2 + 4 }, caption));
  });
  container.replaceChildren(svg);
}

// Lines over time: series = [{name, color, points: [{t, v}]}]; times are ISO strings.
function lineChart(container, name, series, opts = {}) {
  const all = series.flatMap((s) => s.points.filter((p) => p.v !== null && p.v !== undefined));
  if (!all.length) return empty(container, opts.emptyText || "no data in this range");
  const width = 600;
  const height = 230;
  const m = { l: 58, r: 14, t: 12, b: 26 };
  const times = [...new Set(series.flatMap((s) => s.points.map((p) => p.t)))].sort();
  const t0 = Date.parse(times[0]);
  const t1 = Date.parse(times[times.length - 1]);
  const span = Math.max(t1 - t0, 1);
  const yMax = niceMax(Math.max(...all.map((p) => p.v)));
  const x = (t) => m.l + ((Date.parse(t) - t0) / span) * (width - m.l - m.r);
  const y = (v) => height - m.b - (v / yMax) * (height - m.t - m.b);
  const svg = svgRoot(name, width, height);
  const axis = svgEl("g", { class: "axis" });
  for (let i = 0; i <= 4; i++) {
    const v = (yMax * i) / 4;
    axis.append(svgEl("line", { class: "gridline", x1: m.l, x2: width - m.r, y1: y(v), y2: y(v) }));
    axis.append(svgEl("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, opts.fmtY ? opts.fmtY(v) : fmtInt(v)));
  }
  const ticks = Math.min(6, times.length);
  for (let i = 0; i < ticks; i++) {
    const t = times[Math.round((i * (times.length - 1)) / Math.max(ticks - 1, 1))];
    const anchor = i === 0 && ticks > 1 ? "start" : i === ticks - 1 && ticks > 1 ? "end" : "middle";
    axis.append(svgEl("text", { x: x(t), y: height - 8, "text-anchor": anchor }, fmtTime(t, opts.step || 60)));
  }
  svg.append(axis);
  for (const s of series) {
    const pts = s.points.filter((p) => p.v !== null && p.v !== undefined);
    if (!pts.length) continue;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    if (opts.area) {
      const base = y(0).toFixed(1);
      const area = `${d} L${x(pts[pts.length - 1].t).toFixed(1)},${base} L${x(pts[0].t).toFixed(1)},${base} Z`;
      svg.append(svgEl("path", { class: "area", d: area, fill: s.color }));
    }
    svg.append(svgEl("path", { class: "line", d, stroke: s.color, "data-series": s.name }));
    if (pts.length <= 40) {
      for (const p of pts) svg.append(svgEl("circle", { cx: x(p.t), cy: y(p.v), r: 2.6, fill: s.color }));
    }
  }
  const legend = svgEl("g", { class: "legend" });
  series.forEach((s, i) => {
    legend.append(svgEl("rect", { x: m.l + 8 + i * 92, y: m.t, width: 12, height: 4, fill: s.color }));
    legend.append(svgEl("text", { x: m.l + 24 + i * 92, y: m.t + 6 }, s.name));
  });
  svg.append(legend);
  container.replaceChildren(svg);
}

// ---- API ----------------------------------------------------------------------------------

async function ensureToken() {
  if (state.token) return state.token;
  const response = await fetch("/v1/dev/admin-token");
  if (!response.ok) {
    document.getElementById("signin").hidden = false;
    throw new Error("sign in with an admin token");
  }
  state.token = (await response.json()).access_token;
  sessionStorage.setItem("clarion-analytics-token", state.token);
  return state.token;
}

async function api(path, params) {
  const token = await ensureToken();
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v));
  const response = await fetch(`${path}?${query}`, { headers: { Authorization: `Bearer ${token}` } });
  if (response.status === 401) {
    state.token = null;
    sessionStorage.removeItem("clarion-analytics-token");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail || detail;
    } catch (_) {
      // not a problem document
    }
    throw new Error(`${response.status} ${detail}`);
  }
  return response.json();
}

// ---- sections -----------------------------------------------------------------------------

function renderKpis(summary) {
  const t = summary.totals;
  const created = t.created;
  const share = (n) => (created ? fmtPct(n / created) + " of created" : "");
  const tiles = [
    ["Created", t.created, `${fmtInt(t.updated)} updates aggregated`],
    ["Delivered", t.reached, share(t.reached)],
    ["Read", t.read, share(t.read)],
    ["Clicked", t.clicked, share(t.clicked)],
    ["Failed", t.failed, `email ${fmtInt(t.failed_by_channel.email)} · push ${fmtInt(t.failed_by_channel.push)}`, true],
    ["Online now", state.onlineNow ?? 0, "users with a live session"],
  ];
  const box = document.getElementById("kpis");
  box.replaceChildren(
    ...tiles.map(([label, value, sub, bad]) => {
      const tile = el("div", { class: bad && value > 0 ? "kpi bad" : "kpi", "data-kpi": label.toLowerCase() });
      tile.append(el("div", { class: "label" }, label), el("div", { class: "value" }, fmtInt(value)), el("div", { class: "sub" }, sub));
      return tile;
    }),
  );
  const typeSelect = document.getElementById("type");
  const known = new Set([...typeSelect.options].map((o) => o.value));
  for (const row of summary.types) {
    if (!known.has(row.type) && row.type !== "unknown") typeSelect.append(el("option", { value: row.type }, row.type));
  }
}

function renderFunnel(funnel) {
  const colors = ["#3b6fe0", "#5b8def", "#2f9e6a", "#f0a020"];
  const labels = { created: "created", reached: "delivered", read: "read", clicked: "clicked" };
  barChart(
    document.getElementById("funnel"),
    "funnel",
    funnel.steps.map((s, i) => ({
      label: labels[s.step] || s.step,
      value: s.count,
      note: i ? `${fmtPct(s.from_previous)} of previous` : "",
      color: colors[i % colors.length],
    })),
    { emptyText: "no notifications in this range" },
  );
  const items = [];
  for (const [channel, steps] of Object.entries(funnel.channels)) {
    const [routed, delivered, clicked] = steps;
    if (!routed.count && !delivered.count) continue;
    items.push({
      label: `${CHANNEL_LABEL[channel] || channel} delivered`,
      value: delivered.count,
      note: `${fmtPct(delivered.from_previous)} of ${fmtInt(routed.count)} routed · ${fmtInt(clicked.count)} clicked`,
      color: "#7d9be6",
    });
  }
  barChart(document.getElementById("channel-funnels"), "channel-funnels", items, {
    rowHeight: 26,
    noteWidth: 290,
    emptyText: "no channel deliveries in this range",
  });
}

function renderLatency(latency) {
  const select = document.getElementById("latency-stage");
  const keyOf = (s) => `${s.stage}|${s.channel}`;
  const stages = latency.stages;
  const options = stages.map((s) => [keyOf(s), `${STAGE_LABEL[s.stage] || s.stage} (${CHANNEL_LABEL[s.channel] || s.channel})`]);
  const previous = state.latencyKey || select.value;
  select.replaceChildren(...options.map(([value, label]) => el("option", { value }, label)));
  const preferred = ["notification_to_delivery|in_app", "notification_to_delivery|push", "event_to_notification|*"];
  const keys = options.map(([k]) => k);
  const chosen = keys.includes(previous) ? previous : preferred.find((k) => keys.includes(k)) || keys[0];
  if (chosen) select.value = chosen;
  const current = stages.find((s) => keyOf(s) === chosen);
  const container = document.getElementById("latency");
  if (!current) {
    empty(container, "no latency samples in this range");
  } else {
    const pick = (name) => current.series.map((p) => ({ t: p.t, v: p[name] }));
    lineChart(
      container,
      "latency",
      [
        { name: "p50", color: "#3b6fe0", points: pick("p50_ms") },
        { name: "p90", color: "#f0a020", points: pick("p90_ms") },
        { name: "p99", color: "#d9434b", points: pick("p99_ms") },
      ],
      { step: latency.step_seconds, fmtY: fmtMs },
    );
  }
  const table = document.getElementById("latency-table");
  const head = el("tr");
  for (const h of ["stage", "channel", "samples", "p50", "p90", "p99"]) head.append(el("th", {}, h));
  const rows = stages.map((s) => {
    const tr = el("tr");
    tr.append(
      el("td", {}, STAGE_LABEL[s.stage] || s.stage),
      el("td", {}, CHANNEL_LABEL[s.channel] || s.channel),
      el("td", {}, fmtInt(s.count)),
      el("td", {}, fmtMs(s.p50_ms)),
      el("td", {}, fmtMs(s.p90_ms)),
      el("td", {}, fmtMs(s.p99_ms)),
    );
    return tr;
  });
  table.replaceChildren(head, ...rows);
}

function renderFailures(failures) {
  const byChannel = failures.by_channel.filter((c) => c.count).map((c) => `${CHANNEL_LABEL[c.channel] || c.channel} ${fmtInt(c.count)}`);
  document.getElementById("failures-hint").textContent =
    `${fmtInt(failures.total)} failed or bounced deliveries` + (byChannel.length ? ` · ${byChannel.join(" · ")}` : "");
  barChart(
    document.getElementById("failures"),
    "failures",
    failures.by_reason.slice(0, 8).map((r) => ({ label: r.reason, value: r.count, bad: true })),
    { emptyText: "no failures in this range" },
  );
}

function renderOnline(online) {
  state.onlineNow = online.current;
  document.getElementById("online-hint").textContent = `${fmtInt(online.current)} online now · level at the end of each step and its peak`;
  lineChart(
    document.getElementById("online"),
    "online",
    [
      { name: "online", color: "#2f9e6a", points: online.series.map((p) => ({ t: p.t, v: p.online })) },
      { name: "peak", color: "#9fd3b9", points: online.series.map((p) => ({ t: p.t, v: p.peak })) },
    ],
    { step: online.step_seconds, area: true },
  );
}

async function refresh() {
  const status = document.getElementById("status");
  const seconds = Number(document.getElementById("range").value);
  const to = new Date();
  const from = new Date(to.getTime() - seconds * 1000);
  const params = { from: from.toISOString(), to: to.toISOString(), type: document.getElementById("type").value };
  try {
    const [summary, funnel, latency, failures, online] = await Promise.all([
      api("/v1/analytics/summary", params),
      api("/v1/analytics/funnel", params),
      api("/v1/analytics/latency", params),
      api("/v1/analytics/failures", params),
      api("/v1/analytics/online", { from: params.from, to: params.to }),
    ]);
    renderOnline(online);
    renderKpis(summary);
    renderFunnel(funnel);
    renderLatency(latency);
    renderFailures(failures);
    status.textContent = `updated ${to.toISOString().slice(11, 19)} UTC`;
    document.body.dataset.rendered = "true";
  } catch (err) {
    status.textContent = `error: ${err.message}`;
  }
}

document.getElementById("range").addEventListener("change", refresh);
document.getElementById("type").addEventListener("change", refresh);
document.getElementById("latency-stage").addEventListener("change", (e) => {
  state.latencyKey = e.target.value;
  refresh();
});
document.getElementById("use-token").addEventListener("click", () => {
  state.token = document.getElementById("token").value.trim() || null;
  if (state.token) sessionStorage.setItem("clarion-analytics-token", state.token);
  document.getElementById("signin").hidden = true;
  refresh();
});
refresh();
setInterval(refresh, REFRESH_MS);
