// The dashboard: reads /dashboard/panels every few seconds and draws each panel;
// the demand chart reads /dashboard/demand; the verify box checks /proofs/{id} here.
"use strict";
(function () {
  const REFRESH_MS = 3000;
  const DEMAND_REFRESH_MS = 15000;
  const { chart, fmt } = provenance.charts;
  const $ = (sel) => document.querySelector(sel);
  const int = (n) => (n == null ? "–" : Number(n).toLocaleString());
  let recentEvent = null;
  let verifierKey = null;

  /** An element with text children only (never HTML), so stored strings cannot inject markup. */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "title") e.title = v; else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  const fill = (node, rows) => node.replaceChildren(...rows);
  const state = (panel, s) => { $(panel).dataset.state = s; };

  function ago(seconds) {
    if (seconds == null) return "–";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    return `${Math.round(seconds / 3600)} h ago`;
  }
  const when = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "–");
  const whenDay = (iso) => (iso ? new Date(iso).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }) : "–");
  const short = (h) => (h ? h.slice(0, 12) + "…" : "–");

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || `${url}: HTTP ${r.status}`);
    return body;
  }

  // ---- panels ---------------------------------------------------------------------

  const ingestChart = chart($("#c-ingest"), { series: [
    { label: "accepted/s", color: "--accent", fill: "--accent-soft" },
    { label: "dead-lettered/s", color: "--bad" },
  ] });
  const lagChart = chart($("#c-lag"), { series: [{ label: "lag", color: "--warn", fill: "--band95" }] });

  function drawIngest(p, totals) {
    $("#k-rate").textContent = fmt(p.rate);
    $("#k-accepted").textContent = int(totals.accepted);
    $("#k-dead").textContent = int(totals.dead);
    $("#k-lag").textContent = int(p.lag_total);
    ingestChart.update([p.t, p.accepted, p.dead_lettered]);
    if (p.lag_t.length) lagChart.update([p.lag_t, p.lag_records]);
    state("#p-ingest", totals.accepted + totals.dead > 0 ? "data" : "empty");
  }

  function bars(node, rows, label) {
    const max = Math.max(1, ...rows.map((r) => r.n));
    fill(node, rows.flatMap((r) => [
      el("span", { class: "name", title: label(r) }, label(r)),
      el("div", { class: "track" }, Object.assign(el("div", { class: "fill" }), { style: `width:${(100 * r.n) / max}%` })),
      el("span", { class: "n" }, int(r.n)),
    ]));
  }

  function drawEvents(p) {
    bars($("#b-types"), p.by_type, (r) => r.event_type.replaceAll("_", " "));
    bars($("#b-lanes"), p.by_lane, (r) => r.lane);
    $("#lane-count").textContent = p.lanes > p.by_lane.length ? `top ${p.by_lane.length} of ${p.lanes}` : "";
    state("#p-types", p.by_type.length ? "data" : "empty");
    state("#p-lanes", p.by_lane.length ? "data" : "empty");
  }

  function drawDeadLetters(p) {
    $("#dead-total").textContent = p.total ? `${int(p.total)} in all` : "";
    fill($("#t-reasons tbody"), p.reasons.map((r) => el("tr", {}, el("td", {}, r.reason), el("td", { class: "num" }, int(r.n)))));
    fill($("#l-dead"), p.recent.map((r) => el("li", { title: r.value || "" },
      el("span", { class: "where mono" }, `${r.source_topic}/${r.source_partition}@${r.source_offset} · ${when(r.received_at)} `),
      r.reason)));
    state("#p-dead", p.total ? "data" : "empty");
  }

  function drawLedger(p) {
    const cp = p.checkpoint;
    const witnesses = p.cosignatures.map((c) => c.witness);
    fill($("#checkpoint"), cp ? [
      el("div", {}, el("span", { class: "big" }, `checkpoint #${cp.sequence}`), ` signed ${ago(cp.age_s)}`),
      el("div", {}, `${cp.logs} logs · key `, el("code", {}, cp.key_id), " · ",
        witnesses.length
          ? el("span", { class: "badge good" }, `cosigned by ${witnesses.join(", ")}`)
          : el("span", { class: "badge warn" }, "no witness cosignature yet")),
      el("div", { class: "hint" }, `${int(p.cosigned_checkpoints)} checkpoints witnessed by ${p.witnesses} witness${p.witnesses === 1 ? "" : "es"}`),
    ] : [el("div", { class: "hint" }, "no signed checkpoint yet")]);
    fill($("#t-logs tbody"), p.logs.map((l) => el("tr", { title: `last block ${when(l.last_block_at)}` },
      el("td", { class: "mono" }, l.log_id), el("td", { class: "num" }, int(l.blocks)),
      el("td", { class: "num" }, int(l.height)), el("td", { class: "num" }, int(l.tree_size)))));
    state("#p-ledger", p.logs.length ? "data" : "empty");
  }

  function drawAnomalies(p) {
    $("#anomaly-total").textContent = p.total ? `${int(p.total)} in all · ` + p.by_kind.map((k) => `${k.kind} ${int(k.n)}`).join(" · ") : "";
    if (!p.available) {
      $("#anomaly-empty").textContent = p.error ? `cannot read anomalies: ${p.error}` : p.message;
      state("#p-anomalies", "empty");
      return;
    }
    fill($("#t-anomalies tbody"), p.rows.map((a) => {
      const sev = String(a.severity ?? "");
      const cls = /high|critical|severe/i.test(sev) ? "bad" : /medium|warn/i.test(sev) ? "warn" : "";
      const check = a.event_id ? el("button", { type: "button", title: "verify the event that raised it" }, "verify") : null;
      if (check) check.onclick = () => verify(a.event_id);
      return el("tr", {},
        el("td", { class: "nowrap" }, whenDay(a.observed_at || a.detected_at)),
        el("td", {}, a.kind, el("br"), el("span", { class: `badge ${cls}` }, sev || "–"), a.status ? ` ${a.status}` : ""),
        el("td", {}, a.lane_name || "–", el("br"), el("span", { class: "mono muted" }, a.shipment_id || "–")),
        el("td", { class: "explain" }, a.explanation || ""), el("td", {}, check));
    }));
    fill($("#t-anomaly-lanes tbody"), p.lanes.map((l) => el("tr", {},
      el("td", {}, l.lane_name), el("td", { class: "num" }, l.open == null ? "–" : int(l.open)),
      el("td", { class: "num" }, int(l.n)),
      el("td", {}, ...Object.entries(l.kinds || {}).map(([k, n]) => el("span", { class: "chip" }, `${k} ${n}`))))));
    state("#p-anomalies", "data");
  }

  // ---- demand ---------------------------------------------------------------------

  const demandChart = chart($("#c-demand"), {
    series: [
      { label: "95 % high", fill: null, width: 0 }, { label: "95 % low", width: 0 },
      { label: "80 % high", width: 0 }, { label: "80 % low", width: 0 },
      { label: "forecast", color: "--accent", dash: [6, 4] },
      { label: "actual", color: "--actual", points: true, spanGaps: true },
    ],
    bands: [[1, 2, "--band95"], [3, 4, "--accent-soft"]],
  });
  let demandSeries = null;
  let demandTimer = 0;

  function demandData(d) {
    const f = d.forecast || { t: [] };
    const ts = [...new Set([...d.actual.t, ...f.t])].sort((a, b) => a - b);
    const at = (times, values) => {
      const m = new Map(times.map((t, i) => [t, values ? values[i] : null]));
      return ts.map((t) => (m.has(t) ? m.get(t) : null));
    };
    const col = (name) => at(f.t, f[name] || null);
    return [ts, col("yhat_upper_95"), col("yhat_lower_95"), col("yhat_upper"), col("yhat_lower"), col("yhat"), at(d.actual.t, d.actual.y)];
  }

  async function drawDemand() {
    clearTimeout(demandTimer);
    demandTimer = setTimeout(drawDemand, DEMAND_REFRESH_MS);
    if (!demandSeries) return;
    const d = await getJSON(`/dashboard/demand?series=${encodeURIComponent(demandSeries)}`);
    if (!d.available) {
      $("#demand-empty").textContent = d.message;
      state("#p-demand", "empty");
      return;
    }
    demandChart.update(demandData(d));
    const f = d.forecast;
    $("#demand-legend").textContent = f
      ? `${d.series_key}: actuals (dots), forecast by ${f.model || "the model"} trained ${when(f.trained_at)} (dashed), 80 % and 95 % intervals (bands)`
      : `${d.series_key}: actuals only, no forecast yet`;
    state("#p-demand", "data");
  }

  function drawDemandSeries(p) {
    const select = $("#series");
    if (!p.available) {
      $("#demand-empty").textContent = p.error ? `cannot read demand: ${p.error}` : p.message;
      state("#p-demand", "empty");
      return;
    }
    const have = [...select.options].map((o) => o.value).join("\n");
    if (have !== p.series.join("\n")) {
      fill(select, p.series.map((s) => el("option", { value: s }, s)));
      if (demandSeries && p.series.includes(demandSeries)) select.value = demandSeries;
    }
    if (!demandSeries) {
      demandSeries = select.value;
      drawDemand().catch(showError);
    }
  }
  $("#series").addEventListener("change", (e) => { demandSeries = e.target.value; drawDemand().catch(showError); });

  // ---- refresh loop ---------------------------------------------------------------

  function showError(e) {
    const live = $("#live");
    live.className = "live down";
    live.textContent = `store unreachable: ${e.message}`;
  }

  async function refresh() {
    try {
      const p = await getJSON("/dashboard/panels");
      const totals = {
        accepted: p.events.by_type ? p.events.by_type.reduce((n, r) => n + r.n, 0) : 0,
        dead: p.dead_letters.total || 0,
      };
      const draw = [
        ["#p-ingest", () => drawIngest(p.ingest, totals)], ["#p-types", () => drawEvents(p.events)],
        ["#p-dead", () => drawDeadLetters(p.dead_letters)], ["#p-ledger", () => drawLedger(p.ledger)],
        ["#p-demand", () => drawDemandSeries(p.demand)], ["#p-anomalies", () => drawAnomalies(p.anomalies)],
      ];
      for (const [panel, fn] of draw) {
        try { fn(); } catch (e) { state(panel, "error"); console.warn(panel, e); }
      }
      recentEvent = p.recent_event;
      const live = $("#live");
      live.className = "live ok";
      live.textContent = `live · updated ${new Date(p.now * 1000).toLocaleTimeString()}`;
    } catch (e) {
      showError(e);
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  // ---- verify an event ------------------------------------------------------------

  async function verify(eventId) {
    const id = (eventId ?? $("#event-id").value).trim();
    $("#event-id").value = id;
    const verdict = $("#verdict");
    if (!id) { verdict.className = "verdict failed"; verdict.textContent = "give an event id"; return; }
    verdict.className = "verdict"; verdict.textContent = "checking…";
    fill($("#steps"), []);
    let result;
    try {
      const r = await fetch(`/proofs/${encodeURIComponent(id)}`, { cache: "no-store" });
      const body = await r.json();
      if (!r.ok) {
        result = { ok: false, failed: "fetch", steps: [{ step: "fetch", ok: false, detail: body.error || `HTTP ${r.status}` }] };
      } else {
        if (verifierKey === null) verifierKey = await (await fetch("/checkpoints/key")).text();
        result = await provenance.verify.verifyBundle(body, verifierKey);
      }
    } catch (e) {
      result = { ok: false, failed: "fetch", steps: [{ step: "fetch", ok: false, detail: e.message }] };
    }
    verdict.className = `verdict ${result.ok ? "ok" : "failed"}`;
    verdict.textContent = result.ok ? "✓ verified" : `✗ failed: ${result.failed}`;
    verdict.dataset.result = result.ok ? "verified" : "failed";
    verdict.dataset.step = result.failed || "";
    fill($("#steps"), result.steps.map((s) => el("li", { class: s.ok ? "ok" : s.ok === false ? "failed" : "" },
      `${s.ok ? "✓" : s.ok === false ? "✗" : "–"} ${s.step}`, el("span", { class: "detail mono" }, s.detail))));
  }

  $("#verify-form").addEventListener("submit", (e) => { e.preventDefault(); verify(); });
  $("#pick").addEventListener("click", () => { if (recentEvent) $("#event-id").value = recentEvent; });

  // ---- SQL ------------------------------------------------------------------------

  $("#sql-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await fetch("/sql", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ query: $("#q").value }) });
    const j = await r.json();
    $("#sql-out").textContent = j.error ? `error: ${j.error}`
      : [j.columns.join("\t"), ...j.rows.map((row) => row.map((v) => (typeof v === "object" && v !== null ? JSON.stringify(v) : v)).join("\t"))].join("\n")
        + (j.truncated ? "\n… (truncated)" : "");
  });

  refresh();
})();
