// The txrig dashboard: polls dashboard/data once a second and draws what it says.
// Plain JavaScript, no library. Data goes into the page with textContent only.
"use strict";

const POLL_MS = 1000;
const COLORS = {
  ws: "#2f6fdf", sse: "#1f9d55", longpoll: "#e07b00",
  http: "#2f6fdf", redis: "#d64545", nats: "#1a9e77", cluster: "#8250df",
  deliveries: "#2f6fdf", slow: "#d64545", lag: "#d64545",
};
const PALETTE = ["#2f6fdf", "#1f9d55", "#e07b00", "#8250df", "#d64545", "#0e8a8a"];

const state = { started: null, samples: [], since: null, window: 300 };

function $(id) { return document.getElementById(id); }

function setText(id, text) {
  const element = $(id);
  if (element.textContent !== text) element.textContent = text;
}

function format(value) {
  if (value === null || value === undefined) return "–";
  const abs = Math.abs(value);
  if (abs >= 1e6) return trim((value / 1e6).toFixed(1)) + "M";
  if (abs >= 1e4) return trim((value / 1e3).toFixed(1)) + "k";
  return trim(value.toFixed(abs >= 100 ? 0 : abs >= 1 ? 1 : 2));
}

function trim(text) {  // "5.0" -> "5", "0.50" -> "0.5"
  return text.includes(".") ? text.replace(/\.?0+$/, "") : text;
}

function sum(object) {
  return Object.values(object || {}).reduce((total, value) => total + (value || 0), 0);
}

function colorOf(name, index) {
  return COLORS[name] || PALETTE[index % PALETTE.length];
}

// -- tiles ------------------------------------------------------------------

function renderTiles(data) {
  const now = data.current;
  const last = state.samples[state.samples.length - 1] || null;
  setText("connections-total", format(sum(now.connections)));
  for (const kind of ["ws", "sse", "longpoll"]) {
    setText("connections-" + kind, format(now.connections[kind] || 0));
  }
  const received = last ? last.received : {};
  setText("received-rate", format(sum(received)));
  for (const source of ["http", "redis", "nats", "cluster"]) {
    setText("received-" + source, format(received[source] || 0));
  }
  setText("received-total", format(sum(now.received)));
  setText("deliveries-rate", format(last ? last.deliveries : 0));
  setText("deliveries-total", format(now.deliveries));
  setText("slow-total", format(sum(now.slow_clients)));
  setText("slow-detail", Object.entries(now.slow_clients)
    .map(([kind, count]) => kind + " " + format(count)).join(" · "));
  setText("proxy-rate", format(last ? sum(Object.fromEntries(
    Object.entries(last.proxy).map(([target, figures]) => [target, figures.rate]))) : 0));
  setText("proxy-total", format(now.proxy.reduce((total, row) => total + row.requests, 0)));
  const redis = now.redis;
  if (redis === null) {
    setText("redis-lag", "–");
    setText("redis-detail", "no REDIS_URL");
  } else {
    setText("redis-lag", redis.lag === null ? "?" : format(sum(redis.lag)));
    setText("redis-detail", (redis.healthy ? "connected" : "unavailable") +
      (redis.lag === null ? ", lag unknown" : " · unread entries"));
  }
}

// -- tables -----------------------------------------------------------------

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows, columns, empty) {
  const body = $(id).tBodies[0];
  const fresh = document.createElement("tbody");
  if (rows.length === 0) {
    const td = cell(fresh.insertRow(), empty, "empty");
    td.colSpan = columns;
  }
  for (const values of rows) {
    const row = fresh.insertRow();
    for (const value of values) {
      if (Array.isArray(value)) cell(row, value[0], value[1]);
      else cell(row, value);
    }
  }
  body.replaceWith(fresh);
}

function renderTables(data) {
  const now = data.current;
  setText("latency-window", "latency: last " + Math.round(data.latency_window) + " s");
  fillTable("proxy-table", now.proxy.map((row) => [
    row.target, format(row.rate), format(row.requests), format(row.latency_ms.mean),
    format(row.latency_ms.p50), format(row.latency_ms.p95), format(row.latency_ms.p99),
  ]), 7, "no proxied requests yet");
  const cluster = now.cluster;
  if (cluster === null) {
    setText("cluster-synced", "");
    fillTable("members-table", [], 4, "a single node (no CLUSTER_PORT)");
    return;
  }
  setText("cluster-synced", cluster.synced ? "synced" : "syncing");
  fillTable("members-table", cluster.members.map((member) => [
    member.name + (member.address && member.address !== member.name ?
      " (" + member.address + ")" : "") + (member.self ? " · this node" : ""),
    [member.state, "state-" + member.state],
    member.self ? "" : (member.link_up ? "up" : "down"),
    member.self || member.last_seen_seconds_ago === null ? "–" :
      Math.round(member.last_seen_seconds_ago) + " s ago",
  ]), 4, "no members");
}

// -- charts -----------------------------------------------------------------

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= value) return step * power;
  }
  return 10 * power;
}

// series: [{name, color, points: [[t, value or null], ...]}]
function drawChart(id, series, now, windowSeconds) {
  const canvas = $(id);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const left = 44, right = 8, top = 20, bottom = 18;
  const plotW = width - left - right, plotH = height - top - bottom;
  let highest = 0;
  for (const line of series) {
    for (const [, value] of line.points) if (value !== null && value > highest) highest = value;
  }
  const max = niceMax(highest);
  const x = (t) => left + plotW * (1 - (now - t) / windowSeconds);
  const y = (value) => top + plotH * (1 - value / max);
  g.font = "11px system-ui, sans-serif";
  g.strokeStyle = "#dde3e9";
  g.fillStyle = "#6b7785";
  g.lineWidth = 1;
  g.textAlign = "right";
  g.textBaseline = "middle";
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    g.beginPath();
    g.moveTo(left, Math.round(y(value)) + 0.5);
    g.lineTo(width - right, Math.round(y(value)) + 0.5);
    g.stroke();
    g.fillText(value < 10 ? trim(value.toFixed(2)) : format(value), left - 6, y(value));
  }
  g.textAlign = "center";
  g.textBaseline = "alphabetic";
  const step = windowSeconds > 120 ? 60 : 15;
  for (let ago = Math.floor(windowSeconds / step) * step; ago >= 0; ago -= step) {
    const label = ago === 0 ? "now" : "−" + (step === 60 ? ago / 60 + " min" : ago + " s");
    g.textAlign = ago === 0 ? "right" : "center";
    g.fillText(label, ago === 0 ? width - right : x(now - ago), height - 4);
  }
  g.lineWidth = 1.8;
  for (const line of series) {
    g.strokeStyle = line.color;
    g.beginPath();
    let drawing = false;
    for (const [t, value] of line.points) {
      if (value === null || now - t > windowSeconds) { drawing = false; continue; }
      if (drawing) g.lineTo(x(t), y(value));
      else g.moveTo(x(t), y(value));
      drawing = true;
    }
    g.stroke();
  }
  // legend: name and latest value of each series, top left
  g.textAlign = "left";
  g.textBaseline = "middle";
  g.font = "12px system-ui, sans-serif";
  let at = left;
  for (const line of series) {
    const latest = line.points.length ? line.points[line.points.length - 1][1] : null;
    const label = line.name + " " + format(latest);
    g.fillStyle = line.color;
    g.fillRect(at, 6, 9, 9);
    g.fillStyle = "#1d2733";
    g.fillText(label, at + 13, 11);
    at += g.measureText(label).width + 28;
  }
}

function seriesOf(names, pick) {
  return names.map((name, index) => ({
    name, color: colorOf(name, index),
    points: state.samples.map((sample) => [sample.t, pick(sample, name)]),
  }));
}

function renderCharts(data) {
  // the last minute at least, up to the window, as far back as there is history
  const now = data.time;
  const oldest = state.samples.length ? state.samples[0].t : now;
  const span = Math.min(state.window * data.interval,
    Math.max(60, Math.ceil((now - oldest) / 60) * 60));
  drawChart("chart-connections",
    seriesOf(["ws", "sse", "longpoll"], (s, kind) => s.connections[kind] || 0), now, span);
  drawChart("chart-received",
    seriesOf(["http", "redis", "nats", "cluster"], (s, source) => s.received[source] || 0), now, span);
  drawChart("chart-deliveries", [
    { name: "deliveries", color: COLORS.deliveries,
      points: state.samples.map((s) => [s.t, s.deliveries]) },
    { name: "slow dropped", color: COLORS.slow,
      points: state.samples.map((s) => [s.t, sum(s.slow_clients)]) },
  ], now, span);
  const targets = data.current.proxy.map((row) => row.target);
  drawChart("chart-proxy-rate", seriesOf(targets, (s, target) =>
    s.proxy[target] ? s.proxy[target].rate : 0), now, span);
  drawChart("chart-proxy-latency", seriesOf(targets, (s, target) =>
    s.proxy[target] ? s.proxy[target].latency_ms : null), now, span);
  drawChart("chart-redis", [{ name: "lag", color: COLORS.lag,
    points: state.samples.map((s) => [s.t, s.redis_lag]) }], now, span);
}

// -- polling ----------------------------------------------------------------

function setStatus(live, text) {
  const status = $("status");
  status.className = "status " + (live ? "live" : "offline");
  setText("status", text);
}

function take(data) {
  if (data.started !== state.started) {  // a restarted gateway: its history starts again
    state.started = data.started;
    state.samples = [];
  }
  state.window = data.window;
  state.samples.push(...data.samples);
  if (state.samples.length > state.window) state.samples.splice(0, state.samples.length - state.window);
  if (state.samples.length) state.since = state.samples[state.samples.length - 1].t;
}

async function poll() {
  try {
    const query = state.since === null ? "" : "?since=" + encodeURIComponent(state.since);
    const response = await fetch("dashboard/data" + query,
      { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    take(data);
    const workers = data.workers ? " · " + data.workers.answered + " of " + data.workers.of +
      " workers" : data.worker === null ? "" : " · worker " + data.worker;
    setText("node", data.node + workers);
    renderTiles(data);
    renderTables(data);
    renderCharts(data);
    setStatus(true, "live");
    setText("updated", "updated " + new Date(data.time * 1000).toLocaleTimeString());
  } catch (error) {
    setStatus(false, "no data: " + error.message + ", retrying");
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
