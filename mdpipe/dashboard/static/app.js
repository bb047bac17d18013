// mdpipe live dashboard: renders the frames of /dashboard/events (server-sent events).
// Plain JavaScript, no library, no build step. Values are set with textContent only.
"use strict";

const STALE_AFTER_MS = 1500; // no frame for this long: the page says so and shows nothing as live
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const view = { source: null, lastFrameAt: 0, frames: 0, arrivals: [], markets: "", connected: false };

function fmtNum(v, digits) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (digits !== undefined) return v.toFixed(digits);
  return Math.abs(v) >= 1000 ? v.toLocaleString("en-US", { maximumFractionDigits: 1 }) : String(v);
}

function fmtAge(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function fmtTime(ns) {
  if (!ns) return "–";
  const d = new Date(Number(ns) / 1e6);
  return d.toISOString().slice(11, 23);
}

function triple(block) {
  if (!block) return "–";
  return [block.p50, block.p99, block.p99_9].map((v) => (v >= 100 ? v.toFixed(0) : v.toPrecision(3))).join(" / ");
}

// Replace a table body's rows with `rows` (arrays of [text, className]).
function fillTable(id, rows) {
  const body = $(id).tBodies[0];
  while (body.rows.length > rows.length) body.deleteRow(-1);
  rows.forEach((cells, r) => {
    const row = body.rows[r] || body.insertRow();
    while (row.cells.length > cells.length) row.deleteCell(-1);
    cells.forEach((cell, c) => {
      const td = row.cells[c] || row.insertCell();
      const [text, cls] = Array.isArray(cell) ? cell : [cell, ""];
      const s = String(text);
      if (td.textContent !== s) td.textContent = s;
      if (td.className !== (cls || "")) td.className = cls || "";
    });
  });
}

function state(ok, yes, no) {
  return ok ? [yes, "ok"] : [no, "bad"];
}

function setBadge(el, text, cls) {
  el.textContent = text;
  el.className = `badge ${cls}`;
}

function renderInstance(inst) {
  $("instance").textContent = inst.instance;
  const sup = inst.supervisor;
  $("supervisor").textContent = sup
    ? `supervisor pid ${sup.pid}, up ${fmtAge(sup.uptime_s)}, children ${sup.children_up}/${sup.children} up, restarts ${sup.restarts}`
    : "no supervisor";
  fillTable(
    "processes",
    inst.processes.map((p) => [
      p.name, p.pid ?? "–", state(p.alive, "up", "down"), p.core ?? "–", fmtAge(p.uptime_s),
      [p.restarts, p.restarts ? "warn" : ""],
    ]),
  );
  fillTable(
    "feeds",
    inst.feeds.map((f) => [
      `${f.feed}.${f.shard}`, f.exchange,
      state(f.alive && f.connections === f.connections_expected && f.connections_expected > 0,
        `${f.connections}/${f.connections_expected}`, `${f.connections}/${f.connections_expected}`),
      state(f.alive && f.books_synced === f.books_total && f.books_total > 0,
        `${f.books_synced}/${f.books_total}`, `${f.books_synced}/${f.books_total}`),
      [f.gaps, f.gaps ? "warn" : ""], [f.resyncs, f.resyncs ? "warn" : ""], f.reconnects, f.snapshots,
      [f.parse_errors, f.parse_errors ? "warn" : ""],
    ]),
  );
  const pub = inst.publisher;
  fillTable(
    "publisher",
    pub
      ? [[
        state(pub.alive, "up", "down"), state(pub.redis_up, "up", "down"), fmtNum(pub.lag_records),
        [fmtNum(pub.lag_ms, 1), pub.lag_ms > 1000 ? "bad" : ""], fmtNum(pub.books_published),
        fmtNum(pub.trades_published), fmtNum(pub.books_conflated), [pub.dropped, pub.dropped ? "warn" : ""],
      ]]
      : [[["not running", "muted"], "–", "–", "–", "–", "–", "–", "–"]],
  );
  fillTable(
    "rings",
    inst.rings.map((r) => [
      r.ring, r.exchange, state(r.alive, "up", "down"), fmtNum(r.rate), fmtNum(r.messages),
      [fmtAge(r.age_s), r.alive && r.age_s > 5 ? "bad" : ""],
      triple(r.latency && r.latency.feed_to_ring_us), triple(r.latency && r.latency.exchange_to_local_ms),
    ]),
  );
  if (inst.markets) renderMarkets(inst.markets); // sent when it changes and once a second
}

function renderMarkets(markets) {
  const key = markets.map((m) => `${m.ring}|${m.symbol}`).join(",");
  if (key === view.markets) return;
  view.markets = key;
  const select = $("market");
  const chosen = select.value;
  select.replaceChildren(
    ...markets.map((m) => {
      const opt = document.createElement("option");
      opt.value = `${m.ring}|${m.symbol}`;
      opt.textContent = `${m.exchange} ${m.symbol} (${m.ring})`;
      return opt;
    }),
  );
  if (chosen) select.value = chosen;
}

// Decimals enough for every price of a book side, so the ladder's columns line up.
function decimals(levels) {
  let d = 0;
  for (const [price] of levels) {
    const s = String(price);
    const dot = s.indexOf(".");
    if (s.includes("e")) return null; // exponent form: show as is
    if (dot >= 0) d = Math.max(d, s.length - dot - 1);
  }
  return d;
}

function fmtPrice(price, d) {
  return d === null ? String(price) : price.toFixed(d);
}

function clearBook() {
  for (const id of ["best-bid", "best-ask", "spread", "book-uid", "book-time"]) $(id).textContent = "";
  fillTable("ladder", []);
}

function renderMarket(m) {
  const select = $("market");
  if (m && m.ring) {
    const value = `${m.ring}|${m.symbol}`;
    if (select.value !== value && [...select.options].some((o) => o.value === value)) select.value = value;
  }
  if (!m) {
    setBadge($("book-state"), "no market", "bad");
    setBadge($("tape-state"), "no market", "bad");
    clearBook();
    fillTable("tape", []);
    return;
  }
  setBadge($("book-state"), m.state, m.state === "live" ? "ok" : "bad");
  if (m.state !== "live") {
    clearBook();
  } else {
    const bid = m.bids.length ? m.bids[0][0] : null;
    const ask = m.asks.length ? m.asks[0][0] : null;
    const d = decimals(m.bids.concat(m.asks));
    $("best-bid").textContent = bid === null ? "–" : fmtPrice(bid, d);
    $("best-ask").textContent = ask === null ? "–" : fmtPrice(ask, d);
    $("spread").textContent = bid !== null && ask !== null ? fmtPrice(ask - bid, d) : "–";
    $("book-uid").textContent = String(m.uid);
    $("book-time").textContent = fmtTime(m.exchange_ts_ns);
    const n = Math.max(m.bids.length, m.asks.length);
    const rows = [];
    for (let i = 0; i < n; i++) {
      const b = m.bids[i] || ["", ""];
      const a = m.asks[i] || ["", ""];
      const bp = b[0] === "" ? "" : fmtPrice(b[0], d);
      const ap = a[0] === "" ? "" : fmtPrice(a[0], d);
      rows.push([[b[1], "qty"], [bp, "bid"], [ap, "ask"], [a[1], "qty"]]);
    }
    fillTable("ladder", rows);
  }
  const tapeState = m.trades_state || m.state;
  setBadge($("tape-state"), tapeState, tapeState === "live" ? "ok" : "bad");
  const trades = tapeState === "live" ? m.trades || [] : [];
  const td = decimals(trades.map((t) => [t[1]]));
  fillTable(
    "tape",
    trades.map((t) => [
      fmtTime(t[0]), [t[3] > 0 ? "buy" : "sell", t[3] > 0 ? "bid" : "ask"], fmtPrice(t[1], td), String(t[2]),
    ]),
  );
}

// Nothing from an old frame may look live: called when the stream breaks or goes quiet.
function markDisconnected(why) {
  if (!view.connected && document.body.classList.contains("disconnected")) return;
  view.connected = false;
  document.body.className = "disconnected";
  setBadge($("conn"), "disconnected", "bad");
  const since = view.lastFrameAt ? ` — last data ${new Date(view.lastFrameAt).toISOString().slice(11, 19)} UTC` : "";
  $("banner").textContent = `disconnected: ${why}${since}. Reconnecting…`;
  $("banner").hidden = false;
  setBadge($("book-state"), "disconnected", "bad");
  setBadge($("tape-state"), "disconnected", "bad");
  clearBook();
  fillTable("tape", []);
  // Health cells claimed "up" or "synced" as of the last frame: that is no longer known.
  for (const id of ["processes", "feeds", "publisher", "rings"]) {
    for (const td of $(id).querySelectorAll("td.ok")) {
      td.className = "stale";
      td.textContent = "unknown";
    }
  }
  const sup = $("supervisor");
  if (sup.textContent && !sup.textContent.startsWith("as of the last data: ")) sup.textContent = `as of the last data: ${sup.textContent}`;
}

function onFrame(event) {
  const frame = JSON.parse(event.data);
  view.lastFrameAt = Date.now();
  view.frames += 1;
  document.body.dataset.frames = String(view.frames);
  if (!view.connected) {
    view.connected = true;
    document.body.className = "connected";
    setBadge($("conn"), "live", "ok");
    $("banner").hidden = true;
  }
  renderInstance(frame.instance);
  renderMarket(frame.market);
  view.arrivals.push(view.lastFrameAt);
  while (view.arrivals.length && view.arrivals[0] < view.lastFrameAt - 2000) view.arrivals.shift();
  const perSecond = view.arrivals.length / 2;
  $("updated").textContent = `updated ${fmtTime(frame.instance.time_ns)} UTC · ${perSecond.toFixed(1)} updates/s`;
}

function connect() {
  if (view.source) view.source.close();
  const [ring, symbol] = ($("market").value || `${params.get("ring") || ""}|${params.get("symbol") || ""}`).split("|");
  const query = new URLSearchParams({ ring, symbol });
  const source = new EventSource(`/dashboard/events?${query}`);
  source.onmessage = onFrame;
  source.addEventListener("failure", (e) => markDisconnected(`the server could not build a frame (${JSON.parse(e.data).error})`));
  source.onerror = () => markDisconnected("the event stream broke");
  view.source = source;
}

function chooseMarket() {
  const [ring, symbol] = $("market").value.split("|");
  const url = new URL(location.href);
  url.searchParams.set("ring", ring);
  url.searchParams.set("symbol", symbol);
  url.searchParams.delete("token"); // the cookie carries it from here on
  history.replaceState(null, "", url);
  setBadge($("book-state"), "loading", "bad");
  setBadge($("tape-state"), "loading", "bad");
  clearBook();
  fillTable("tape", []);
  connect();
}

function init() {
  if (params.get("token")) {
    const url = new URL(location.href);
    url.searchParams.delete("token");
    history.replaceState(null, "", url);
  }
  $("market").addEventListener("change", chooseMarket);
  setInterval(() => {
    if (view.connected && Date.now() - view.lastFrameAt > STALE_AFTER_MS) markDisconnected("no data for over a second");
  }, 250);
  connect();
}

init();
