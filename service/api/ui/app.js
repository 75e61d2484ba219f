// The /ui page: tables with live figures, a 2-D projection, neighbour search.
// Plain JavaScript, no library, no build step. Every URL is relative to /ui, so the page works
// behind a proxy that mounts the service under a path prefix.
"use strict";

const TOKEN_KEY = "embed-token";
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const PLOT = { width: 720, height: 480, margin: 24, radius: 3.2, namedPoints: 40 };

const state = { selected: null, tables: [], lastUpdated: null, rates: {}, timer: null };
const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const reply = await fetch(path, { ...options, headers });
  if (reply.status === 401) throw new Unauthorized((await reply.json()).detail);
  const body = reply.headers.get("content-type")?.startsWith("application/json")
    ? await reply.json() : await reply.text();
  if (!reply.ok) throw new Error(body.detail || `${reply.status} ${reply.statusText}`);
  return body;
}

function showLogin(message) {
  clearInterval(state.timer);
  state.timer = null;
  $("content").hidden = true;
  $("login").hidden = false;
  $("status").textContent = "token needed";
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function start() {
  try {
    await refreshTables();
  } catch (error) {
    if (error instanceof Unauthorized) {
      const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(hadToken ? `The service refused the token: ${error.message}` : "");
      return;
    }
    $("status").textContent = `error: ${error.message}`;
    return;
  }
  $("login").hidden = true;
  $("content").hidden = false;
  if (!state.timer) state.timer = setInterval(poll, POLL_MS);
}

async function poll() {
  try {
    await refreshTables();
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(error.message);
    else $("status").textContent = `error: ${error.message}`;
  }
}

// -- tables and their live figures (the service's own /metrics) ------------------------------
function parseMetrics(text) {
  const values = {};
  for (const line of text.split("\n")) {
    const match = /^(embed_[a-z_]+)\{table="([^"]*)"\} (\S+)$/.exec(line);
    if (match) (values[match[2]] ??= {})[match[1]] = Number(match[3]);
  }
  return values;
}

async function refreshTables() {
  const listing = await api("v1/tables");
  const metrics = parseMetrics(await api("metrics", { headers: { Accept: "text/plain" } }));
  const now = performance.now();
  for (const table of listing.tables) {
    const updated = metrics[table.name]?.embed_rows_updated_total ?? 0;
    const last = state.lastUpdated?.values[table.name];
    if (last !== undefined && now > state.lastUpdated.at) {
      state.rates[table.name] = Math.max(0, (updated - last) / ((now - state.lastUpdated.at) / 1000));
    }
    table.metrics = metrics[table.name] || {};
  }
  state.lastUpdated = {
    at: now,
    values: Object.fromEntries(listing.tables.map((t) => [t.name, t.metrics.embed_rows_updated_total ?? 0])),
  };
  state.tables = listing.tables;
  drawTables();
  $("status").textContent = `${listing.tables.length} table(s), updated ${new Date().toLocaleTimeString()}`;
  if (!state.selected && listing.tables.length) await select(listing.tables[0].name);
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function drawTables() {
  const body = $("tables").tBodies[0];
  body.replaceChildren();
  $("no-tables").hidden = state.tables.length > 0;
  for (const table of state.tables) {
    const row = body.insertRow();
    row.dataset.table = table.name;
    row.className = table.name === state.selected ? "selected" : "";
    const m = table.metrics;
    cell(row, table.name, "name");
    // a dynamic table has no fixed size: its live rows, marked as such
    cell(row, table.num_embeddings === null ? `${table.rows.toLocaleString()} live`
      : table.num_embeddings.toLocaleString(), "num");
    cell(row, table.embedding_dim, "num");
    cell(row, (m.embed_table_step ?? table.step).toLocaleString(), "num step");
    cell(row, (m.embed_table_pending_rows ?? table.pending_rows).toLocaleString(), "num pending");
    const rate = state.rates[table.name];
    cell(row, rate === undefined ? "-" : rate.toFixed(1), "num rate");
    cell(row, (table.labels ?? 0).toLocaleString(), "num");
    cell(row, ((m.embed_table_bytes ?? table.nbytes) / 2 ** 20).toFixed(1), "num");
    row.addEventListener("click", () => select(table.name));
  }
}

// -- the projection ---------------------------------------------------------------------------
async function select(name) {
  state.selected = name;
  drawTables();
  $("explore-panel").hidden = false;
  $("plot-title").textContent = `Projection of ${name}`;
  $("results").hidden = true;
  $("search-error").hidden = true;
  const projection = await api(`v1/tables/${encodeURIComponent(name)}/projection?sample=1000`);
  if (state.selected === name) drawPlot(projection);
}

function drawPlot(projection) {
  const svg = $("plot");
  svg.replaceChildren();
  const { points, ids, labels } = projection;
  const [share1, share2] = projection.explained_variance_ratio.map((x) => (100 * x).toFixed(1));
  $("plot-caption").textContent = `PCA of ${ids.length} of ${projection.live_rows.toLocaleString()} ` +
    `rows at step ${projection.step}: axes hold ${share1}% and ${share2}% of the sample's variance. ` +
    "Hover a point for its label; click it to search its neighbours.";
  if (!points.length) return;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const scale = (values, size) => {
    const low = Math.min(...values), high = Math.max(...values);
    const span = high - low || 1;
    return (v) => PLOT.margin + ((v - low) / span) * (size - 2 * PLOT.margin);
  };
  const sx = scale(xs, PLOT.width), sy = scale(ys, PLOT.height);
  const group = document.createElementNS(SVG, "g");
  points.forEach(([x, y], i) => {
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", sx(x).toFixed(1));
    dot.setAttribute("cy", (PLOT.height - sy(y)).toFixed(1));
    dot.setAttribute("r", PLOT.radius);
    dot.setAttribute("class", "point");
    dot.dataset.id = ids[i];
    const name = labels?.[i] ?? `#${ids[i]}`;
    dot.dataset.label = name;
    const title = document.createElementNS(SVG, "title");
    title.textContent = name;
    dot.append(title);
    group.append(dot);
    if (labels && labels[i] && i < PLOT.namedPoints) {
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("x", (sx(x) + 5).toFixed(1));
      text.setAttribute("y", (PLOT.height - sy(y) - 4).toFixed(1));
      text.setAttribute("class", "point-label");
      text.textContent = labels[i];
      group.append(text);
    }
  });
  svg.append(group);
}

function showTooltip(event) {
  const target = event.target;
  const tip = $("tooltip");
  if (!(target instanceof SVGCircleElement)) { tip.hidden = true; return; }
  const box = $("plot-box").getBoundingClientRect();
  tip.textContent = `${target.dataset.label} (id ${target.dataset.id})`;
  tip.style.left = `${event.clientX - box.left + 12}px`;
  tip.style.top = `${event.clientY - box.top + 12}px`;
  tip.hidden = false;
}

// -- neighbours -------------------------------------------------------------------------------
function parseQuery(text) {
  const query = { positive: [], negative: [] };
  for (const token of text.trim().split(/\s+/).filter(Boolean)) {
    const sign = token[0] === "-" && token.length > 1 ? "negative" : "positive";
    const word = /^[+-]./.test(token) ? token.slice(1) : token;
    query[sign].push(/^\d+$/.test(word) ? Number(word) : word);
  }
  return query;
}

async function search(event) {
  event?.preventDefault();
  const query = parseQuery($("query").value);
  const metric = $("metric").value;
  const body = { ...query, k: Number($("k").value) || 10, metric };
  $("search-error").hidden = true;
  try {
    const found = await api(`v1/tables/${encodeURIComponent(state.selected)}/neighbors`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    drawResults(found, metric);
  } catch (error) {
    if (error instanceof Unauthorized) { showLogin(error.message); return; }
    $("results").hidden = true;
    $("search-error").textContent = error.message;
    $("search-error").hidden = false;
  }
}

function drawResults(found, metric) {
  const body = $("results").tBodies[0];
  body.replaceChildren();
  $("score-head").textContent = metric === "l2" ? "distance" : metric;
  found.ids.forEach((id, i) => {
    const row = body.insertRow();
    cell(row, i + 1, "num");
    cell(row, id, "num");
    cell(row, found.labels?.[i] ?? "", "label");
    cell(row, found.scores[i].toFixed(4), "num");
  });
  $("results").hidden = false;
  const nearest = new Set(found.ids.map(String));
  for (const dot of $("plot").querySelectorAll("circle")) {
    dot.classList.toggle("neighbour", nearest.has(dot.dataset.id));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    start();
  });
  $("search-form").addEventListener("submit", search);
  $("plot").addEventListener("mousemove", showTooltip);
  $("plot").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
  $("plot").addEventListener("click", (event) => {
    if (!(event.target instanceof SVGCircleElement)) return;
    const label = event.target.dataset.label;
    $("query").value = label.startsWith("#") ? event.target.dataset.id : label;
    search();
  });
  start();
});
