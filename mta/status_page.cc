#include "mta/status_page.h"

namespace peregrine {

const char kStatusPageHtml[] = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Peregrine</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9;
         color: #1d2430; }
  header { background: #1d2430; color: #fff; padding: 10px 16px;
           display: flex; justify-content: space-between; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header span { font-size: 12px; opacity: .8; }
  main { padding: 12px; max-width: 1100px; margin: auto; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
           gap: 10px; }
  .card { background: #fff; border-radius: 8px; padding: 10px 12px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  .card .label { font-size: 12px; color: #5b6575; }
  .card .value { font-size: 24px; font-weight: 600; }
  .card .sub { font-size: 12px; color: #5b6575; }
  section { background: #fff; border-radius: 8px; padding: 10px 12px;
            margin-top: 12px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  h2 { font-size: 14px; margin: 0 0 8px; }
  canvas { width: 100%; height: 180px; }
  table { width: 100%; border-collapse: collapse; font-size: 13px; }
  th, td { text-align: left; padding: 4px 6px; border-bottom: 1px solid #eef0f3; }
  td.n, th.n { text-align: right; }
  td.why { color: #8a5a00; font-size: 12px; padding-top: 0; }
  .bad { color: #b3261e; }
  .grid2 { display: grid; grid-template-columns: 1fr; gap: 0 12px; }
  @media (min-width: 800px) { .grid2 { grid-template-columns: 1fr 1fr; } }
</style>
</head>
<body>
<header><h1>Peregrine</h1><span id="updated">connecting…</span></header>
<main>
  <div class="cards">
    <div class="card"><div class="label">In the queue</div>
      <div class="value" id="queue-messages">–</div>
      <div class="sub" id="queue-state"></div></div>
    <div class="card"><div class="label">Received / s</div>
      <div class="value" id="rate-received">–</div>
      <div class="sub">total <span id="total-received">–</span></div></div>
    <div class="card"><div class="label">Delivered / s</div>
      <div class="value" id="rate-delivered">–</div>
      <div class="sub">total <span id="total-delivered">–</span></div></div>
    <div class="card"><div class="label">Deferred / s</div>
      <div class="value" id="rate-deferred">–</div>
      <div class="sub">total <span id="total-deferred">–</span></div></div>
    <div class="card"><div class="label">Bounced / s</div>
      <div class="value" id="rate-bounced">–</div>
      <div class="sub">total <span id="total-bounced">–</span></div></div>
    <div class="card"><div class="label">Connections</div>
      <div class="value" id="connections">–</div></div>
  </div>
  <section><h2>Throughput, last five minutes (messages per second)</h2>
    <canvas id="chart"></canvas></section>
  <div class="grid2">
    <section><h2>Busiest sites</h2><table id="busiest"><thead><tr>
      <th>site</th><th class="n">delivered</th><th class="n">deferred</th>
      <th class="n">failed</th></tr></thead><tbody></tbody></table></section>
    <section><h2>Most troubled sites</h2><table id="troubled"><thead><tr>
      <th>site</th><th class="n">delivered</th><th class="n">deferred</th>
      <th class="n">failed</th></tr></thead><tbody></tbody></table></section>
  </div>
  <section><h2>Failures by category</h2><table id="categories"><thead><tr>
    <th>category</th><th class="n">recipients</th></tr></thead><tbody></tbody>
  </table></section>
</main>
<script>
"use strict";
const samples = [];  // {t, received, delivered} per poll, five minutes.
let last = null;

function fmt(n) { return Number(n).toLocaleString("en-US"); }
function rate(now, before, key, seconds) {
  if (!before || seconds <= 0) return 0;
  return Math.max(0, (now.totals[key] - before.totals[key]) / seconds);
}
function setText(id, text) { document.getElementById(id).textContent = text; }
function fill(id, rows, cells, note) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    const values = cells(row);
    values.forEach((value, i) => {
      const td = document.createElement("td");
      td.textContent = value;
      if (i > 0) td.className = "n";
      tr.appendChild(td);
    });
    body.appendChild(tr);
    const text = note ? note(row) : "";
    if (text) {
      // The last reply that kept mail from going, and what to do.
      const why = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = values.length;
      td.className = "why";
      td.textContent = text;
      why.appendChild(td);
      body.appendChild(why);
    }
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 4;
    td.textContent = "none yet";
    tr.appendChild(td);
    body.appendChild(tr);
  }
}
function draw() {
  const canvas = document.getElementById("chart");
  // Drawn at the size it is shown, in CSS pixels, sharp on any screen.
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  if (samples.length < 2) return;
  const max = Math.max(1, ...samples.map(s => Math.max(s.received, s.delivered)));
  const t0 = samples[samples.length - 1].t - 300;
  const x = t => (t - t0) / 300 * w;
  const y = v => h - 6 - v / max * (h - 24);
  for (const [key, color] of [["received", "#3b6fd4"], ["delivered", "#1e8e3e"]]) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    samples.forEach((s, i) => i ? g.lineTo(x(s.t), y(s[key])) : g.moveTo(x(s.t), y(s[key])));
    g.stroke();
  }
  g.fillStyle = "#5b6575"; g.font = "12px system-ui";
  g.fillText("max " + max.toFixed(0) + "/s  (blue: received, green: delivered)", 6, 14);
}
async function poll() {
  try {
    // Off loopback the data needs a token: open the page as
    // /#token=TOKEN (the fragment never leaves the browser).
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    const r = await fetch("/api/v1/status", {cache: "no-store",
        headers: token ? {"Authorization": "Bearer " + token} : {}});
    if (r.status === 401) throw new Error("this listener needs a token: open /#token=TOKEN");
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    const now = Date.now() / 1000;
    const seconds = last ? now - last.t : 0;
    setText("queue-messages", fmt(s.queue.messages));
    setText("queue-state", s.queue.accepting ? "taking mail" : "refusing new mail (disk)");
    setText("connections", fmt(s.connections));
    for (const k of ["received", "delivered", "deferred"]) {
      setText("total-" + k, fmt(s.totals[k]));
      setText("rate-" + k, rate(s, last && last.s, k, seconds).toFixed(1));
    }
    setText("total-bounced", fmt(s.totals.bounce));
    setText("rate-bounced", rate(s, last && last.s, "bounce", seconds).toFixed(1));
    if (last) {
      samples.push({t: now, received: rate(s, last.s, "received", seconds),
                    delivered: rate(s, last.s, "delivered", seconds)});
      while (samples.length && samples[0].t < now - 300) samples.shift();
    }
    const site = x => [x.site || "(none)", fmt(x.delivered), fmt(x.deferred), fmt(x.failed)];
    fill("busiest", s.busiest_sites, site);
    fill("troubled", s.troubled_sites, site,
         x => x.last_problem ? x.last_problem + (x.advice ? " → " + x.advice : "") : "");
    fill("categories", Object.entries(s.failures_by_category).sort((a, b) => b[1] - a[1]),
         ([c, n]) => [c, fmt(n)]);
    setText("updated", "peregrine " + s.version + " · up " + Math.round(s.uptime_s) +
            " s · " + new Date().toLocaleTimeString());
    document.body.dataset.ready = "1";
    last = {t: now, s};
    draw();
  } catch (e) {
    setText("updated", "cannot reach the daemon: " + e.message);
  }
}
poll();
setInterval(poll, 2000);
</script>
</body>
</html>
)html";

}  // namespace peregrine
