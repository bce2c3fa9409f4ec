// Kanal ops dashboard: two server-sent event streams, no libraries.
//   /api/v1/stream/coverage  event "coverage": the province and every regency
//   /ops/stream              event "ops": payments per second, ledger health, callback deliveries
// Every message is the full current state, so a reconnect (EventSource does it
// by itself) simply redraws.
"use strict";

const TARGET_BP = 5956;
const $ = (id) => document.getElementById(id);
// Numbers follow the page's language (<html lang>, "en": 1,819,430 and 0.06%),
// counts and percentages alike, whatever the browser's locale.
const LANG = document.documentElement.lang || "en";
const nf = new Intl.NumberFormat(LANG);
const nf1 = new Intl.NumberFormat(LANG, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const nf2 = new Intl.NumberFormat(LANG, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
// Times in Kalimantan Barat's zone (WIB), labelled, whatever the browser's zone.
const wibTime = new Intl.DateTimeFormat(LANG, {
  timeZone: "Asia/Pontianak", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});
function wib(iso) { return wibTime.format(new Date(iso)) + " WIB"; }
const streams = { coverage: false, ops: false };

function pct(bp) { return nf2.format(bp / 100) + "%"; }
function setText(id, text, value) {
  const el = $(id);
  el.textContent = text;
  if (value !== undefined) el.dataset.value = String(value);
}
function liveState() {
  const up = streams.coverage && streams.ops;
  const el = $("live");
  el.dataset.state = up ? "live" : (streams.coverage || streams.ops ? "connecting" : "down");
  $("live-text").textContent = up ? "live" : "reconnecting…";
}

// ------------------------------------------------------------- coverage --

function arcPoint(fraction) {
  const angle = Math.PI * (1 - Math.min(Math.max(fraction, 0), 1));
  return [100 + 80 * Math.cos(angle), 100 - 80 * Math.sin(angle)];
}

function drawGauge(bp, targetBp) {
  const [x, y] = arcPoint(bp / 10000);
  $("gauge-value").setAttribute("d", `M 20 100 A 80 80 0 0 1 ${x.toFixed(2)} ${y.toFixed(2)}`);
  const angle = Math.PI * (1 - targetBp / 10000);
  const inner = [100 + 66 * Math.cos(angle), 100 - 66 * Math.sin(angle)];
  const outer = [100 + 94 * Math.cos(angle), 100 - 94 * Math.sin(angle)];
  const t = $("gauge-target");
  t.setAttribute("x1", inner[0]); t.setAttribute("y1", inner[1]);
  t.setAttribute("x2", outer[0]); t.setAttribute("y2", outer[1]);
}

// Exact coverage, highest first: protected / workforce compared as
// a.protected * b.workforce against b.protected * a.workforce (integers, as
// BigInt: no rounding), not basis points, which tie regencies that differ.
// Ties by regency code, as `kanal coverage` ranks (gateway/cli.py).
function byCoverage(a, b) {
  const left = BigInt(a.protected) * BigInt(b.workforce);
  const right = BigInt(b.protected) * BigInt(a.workforce);
  if (left !== right) return left > right ? -1 : 1;
  return a.regency_code < b.regency_code ? -1 : (a.regency_code > b.regency_code ? 1 : 0);
}

function drawCoverage(snap) {
  const p = snap.province;
  const targetBp = p.target_basis_points || TARGET_BP;
  drawGauge(p.coverage_basis_points, targetBp);
  setText("province-percent", pct(p.coverage_basis_points));
  setText("province-target", "target " + pct(targetBp));
  setText("province-protected", nf.format(p.protected), p.protected);
  setText("province-workforce", nf.format(p.workforce));
  const needed = Math.max(0, Math.ceil(p.workforce * targetBp / 10000) - p.protected);
  setText("province-gap", needed === 0 ? "reached" : nf.format(needed) + " workers");
  setText("coverage-asof", "as of " + snap.as_of + " · update " + snap.sequence);

  const rows = [...snap.regencies].sort(byCoverage);
  const scaleBp = Math.max(targetBp * 1.15, ...rows.map((r) => r.coverage_basis_points), 1);
  const board = $("board");
  board.replaceChildren(...rows.map((r, i) => {
    const li = document.createElement("li");
    li.dataset.regency = r.regency_code;
    li.innerHTML =
      `<span class="rank">${i + 1}</span>` +
      `<span class="name"></span>` +
      `<span class="bar"><span style="width:${(100 * r.coverage_basis_points / scaleBp).toFixed(2)}%"></span>` +
      `<i class="goal" style="left:${(100 * targetBp / scaleBp).toFixed(2)}%"></i></span>` +
      `<span class="pct">${pct(r.coverage_basis_points)}<small class="protected"></small></span>`;
    li.querySelector(".name").textContent = r.name;
    li.querySelector(".protected").textContent = nf.format(r.protected) + " / " + nf.format(r.workforce);
    li.querySelector(".protected").dataset.value = String(r.protected);
    return li;
  }));
}

// ------------------------------------------------------------------ ops --

function drawSpark(history) {
  const values = history.map((h) => h.per_second);
  const peak = Math.max(1, ...values);
  const n = Math.max(values.length - 1, 1);
  const pts = values.map((v, i) => `${(300 * i / n).toFixed(1)},${(68 - 64 * v / peak).toFixed(1)}`);
  $("spark-line").setAttribute("points", pts.join(" "));
  $("spark-area").setAttribute("points", values.length ? `0,70 ${pts.join(" ")} 300,70` : "");
  setText("pps-peak", nf1.format(Math.max(0, ...values)));
}

const MARKS = { ok: "✓", violation: "✗", skipped: "–" };

const HEALTH_BADGES = { ok: "all checks pass", violation: "violation", checking: "checking…", error: "checks failed" };

function drawHealth(health) {
  if (!health) return;
  const badge = $("health-status");
  badge.className = "badge " + health.status;
  badge.textContent = HEALTH_BADGES[health.status] || health.status;
  $("checks").replaceChildren(...health.checks.map((c) => {
    const li = document.createElement("li");
    li.className = c.verdict;
    li.dataset.check = c.name;
    li.innerHTML = `<span class="mark"></span><span><span class="title"></span><span class="why"></span></span>`;
    li.querySelector(".mark").textContent = MARKS[c.verdict] || "?";
    li.querySelector(".title").textContent = c.title;
    li.querySelector(".why").textContent = c.detail;
    return li;
  }));
  // The checks read whole tables and run on their own: say when, and how long they took.
  let when = health.checked_at
    ? "checked " + wib(health.checked_at)
      + (health.check_seconds !== undefined ? ` in ${nf1.format(health.check_seconds)} s` : "")
    : (health.error ? "no check has finished yet" : "the first check is running");
  if (health.error) {
    when += ` · the last run failed (${health.error}) at ${wib(health.error_at)}`
      + (health.checked_at ? "; the verdicts above are from before it" : "") + "; trying again";
  }
  // The next run waits longer after a long one (a tenth of the time at most).
  if (health.next_check_at) when += ` · next at ${wib(health.next_check_at)}`;
  setText("health-at", when);
}

const DELIVERY_COLOURS = { delivered: "#0a7a3f", pending: "#f0b429", failed: "#c0262d", gone: "#7b1fa2", dropped: "#8a94a3" };

function drawDeliveries(deliveries) {
  if (!deliveries) {
    $("delivery-bar").replaceChildren();
    $("delivery-legend").replaceChildren();
    setText("deliveries-note", "Callbacks are not installed on this gateway.");
    return;
  }
  const total = Object.values(deliveries).reduce((a, b) => a + b, 0);
  const order = ["delivered", "pending", "failed", "gone", "dropped"];
  $("delivery-bar").replaceChildren(...order.filter((k) => deliveries[k]).map((k) => {
    const s = document.createElement("span");
    s.style.width = (100 * deliveries[k] / total) + "%";
    s.style.background = DELIVERY_COLOURS[k];
    return s;
  }));
  $("delivery-legend").replaceChildren(...order.map((k) => {
    const li = document.createElement("li");
    li.dataset.status = k;
    li.innerHTML = `<i style="background:${DELIVERY_COLOURS[k]}"></i>${k} <b></b>`;
    li.querySelector("b").textContent = nf.format(deliveries[k] || 0);
    return li;
  }));
  const finished = (deliveries.delivered || 0) + (deliveries.failed || 0) + (deliveries.gone || 0);
  const failed = (deliveries.failed || 0) + (deliveries.gone || 0);
  setText("deliveries-note", finished
    ? `${nf2.format(100 * failed / finished)}% of ${nf.format(finished)} finished deliveries failed`
    : "No finished deliveries yet.");
}

function drawOps(message) {
  setText("pps", nf1.format(message.payments.per_second), message.payments.per_second);
  setText("payments-accepted", nf.format(message.payments.accepted), message.payments.accepted);
  drawSpark(message.payments.history);
  drawHealth(message.health);
  drawDeliveries(message.deliveries);
}

// -------------------------------------------------------------- streams --

function listen(url, event, name, draw) {
  const source = new EventSource(url);
  source.addEventListener(event, (e) => { streams[name] = true; liveState(); draw(JSON.parse(e.data)); });
  source.addEventListener("open", () => { streams[name] = true; liveState(); });
  source.addEventListener("error", () => { streams[name] = false; liveState(); });
}

listen("/api/v1/stream/coverage", "coverage", "coverage", drawCoverage);
listen("/ops/stream", "ops", "ops", drawOps);
