// The aioflow dashboard: reads server-sent events from ./events and draws each block's figures.
// Plain JavaScript, no build step, no network beyond this server.
"use strict";
(function () {
  const params = new URLSearchParams(window.location.search);
  const token = params.get("token");
  const interval = params.get("interval") || "0.5";
  const query = "?interval=" + encodeURIComponent(interval) +
    (token ? "&token=" + encodeURIComponent(token) : "");
  const HISTORY = Math.max(10, Math.round(60 / Math.max(0.05, Number(interval) || 0.5)));
  const $ = (id) => document.getElementById(id);
  const graph = $("graph");
  const cards = new Map();
  const history = [];
  let previous = null;
  let order = "";

  function number(n) {
    if (!isFinite(n)) return "\u2013";
    if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
    if (Number.isInteger(n)) return String(n);
    return n.toFixed(n < 10 ? 1 : 0);
  }

  function seconds(s) {
    if (s <= 0) return "\u2013";
    if (s < 1e-3) return (s * 1e6).toFixed(0) + " \u00b5s";
    if (s < 1) return (s * 1e3).toFixed(1) + " ms";
    return s.toFixed(2) + " s";
  }

  function field(dl, key, label) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.className = key;
    dd.textContent = "\u2013";
    dl.append(dt, dd);
  }

  function card(rec) {
    const el = document.createElement("article");
    el.className = "block";
    el.dataset.block = rec.name;
    const h2 = document.createElement("h2");
    h2.textContent = rec.name + " ";
    const workers = document.createElement("span");
    workers.className = "workers";
    workers.textContent = "\u00d7" + rec.workers;
    h2.append(workers);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.title = "utilisation: busy time / (wall time \u00d7 workers)";
    bar.append(document.createElement("div"));
    const dl = document.createElement("dl");
    field(dl, "throughput", "items/s");
    field(dl, "utilisation", "utilisation");
    field(dl, "blocked", "blocked on output");
    field(dl, "queue", "queue");
    field(dl, "in-flight", "in flight");
    field(dl, "received", "received");
    field(dl, "dropped", "dropped");
    field(dl, "p50", "latency p50");
    el.append(h2, bar, dl);
    return el;
  }

  function layout(blocks) {
    const names = blocks.map((b) => b.name).join("\n");
    if (names === order) return;
    order = names;
    graph.replaceChildren();
    cards.clear();
    blocks.forEach((rec, i) => {
      if (i > 0) {
        const arrow = document.createElement("div");
        arrow.className = "arrow";
        arrow.textContent = "\u2192";
        graph.append(arrow);
      }
      const el = card(rec);
      cards.set(rec.name, el);
      graph.append(el);
    });
  }

  function set(el, key, text) {
    const node = el.querySelector("." + key);
    if (node.textContent !== text) node.textContent = text;
  }

  function sparkline() {
    const top = Math.max(1, ...history);
    // Fills the width as points arrive, then scrolls (the newest point on the right).
    const step = 300 / Math.max(1, history.length - 1);
    const points = history.map((v, i) =>
      (i * step).toFixed(1) + "," + (58 - (v / top) * 54).toFixed(1));
    $("sparkpath").setAttribute("points", points.join(" "));
  }

  function render(snap) {
    $("pipeline").textContent = snap.pipeline;
    document.title = "aioflow: " + snap.pipeline;
    const blocks = snap.blocks;
    layout(blocks);
    const dt = previous ? snap.time - previous.time : 0;
    const before = new Map(previous ? previous.blocks.map((b) => [b.name, b]) : []);
    let dropped = 0;
    for (const rec of blocks) {
      const el = cards.get(rec.name);
      const old = before.get(rec.name);
      const rate = old && dt > 0 ? (rec.completed - old.completed) / dt : NaN;
      set(el, "throughput", number(rate));
      set(el, "utilisation", (rec.utilisation * 100).toFixed(0) + "%");
      set(el, "blocked", (rec.blocked_ratio * 100).toFixed(0) + "%");
      set(el, "queue", number(rec.queue_depth));
      set(el, "in-flight", number(rec.in_flight));
      set(el, "received", number(rec.received));
      set(el, "dropped", number(rec.dropped));
      set(el, "p50", seconds(rec.latency_p50_s));
      const bar = el.querySelector(".bar");
      bar.firstChild.style.width = Math.min(100, rec.utilisation * 100).toFixed(1) + "%";
      bar.classList.toggle("warm", rec.utilisation >= 0.5 && rec.utilisation < 0.8);
      bar.classList.toggle("hot", rec.utilisation >= 0.8);
      el.classList.toggle("limit", !!snap.bottleneck && snap.bottleneck.block === rec.name);
      dropped += rec.dropped;
    }
    const last = blocks[blocks.length - 1];
    const lastBefore = last && before.get(last.name);
    if (last && lastBefore && dt > 0) {
      const rate = (last.emitted - lastBefore.emitted) / dt;
      $("rate").textContent = number(rate);
      history.push(rate);
      if (history.length > HISTORY) history.shift();
      sparkline();
    }
    $("outputs").textContent = last ? number(last.emitted) : "\u2013";
    $("dropped").textContent = number(dropped);
    const lat = snap.latency;
    $("e2e").textContent = !lat || !lat.count ? "\u2013"
      : lat.p99_s === null ? "> 30 s" : "\u2264 " + seconds(lat.p99_s);
    $("bottleneck").textContent = snap.bottleneck
      ? "Bottleneck: " + snap.bottleneck.message : "No bottleneck yet: nothing has run.";
    previous = snap;
  }

  $("span").textContent = Math.round(HISTORY * (Number(interval) || 0.5)) + " s";
  const events = new EventSource("events" + query);
  events.onopen = () => { $("status").textContent = "live"; $("status").className = "status live"; };
  events.onmessage = (ev) => render(JSON.parse(ev.data));
  events.onerror = () => {
    $("status").textContent = "disconnected (the run may have ended); retrying";
    $("status").className = "status down";
  };
})();
