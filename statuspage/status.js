// caproxy status page: every refresh-ms it reads /admin/budget, /readyz and
// /metrics from this listener and redraws the page the server rendered.
// History (the charts, the last-minute hit ratio) lives in this tab only.
"use strict";
(function () {
  const every = Number(document.body.dataset.refreshMs) || 2000;
  const keepMs = 5 * 60 * 1000;
  const history = {}; // account -> [{t, used, limit}]
  const counters = []; // [{t, hit, miss, stale, bypass}]

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  // parseProm reads the Prometheus text format's samples (name, labels, value).
  function parseProm(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line[0] === "#") continue;
      const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
      if (!m) continue;
      const labels = {};
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while (m[2] && (l = re.exec(m[2]))) labels[l[1]] = l[2].replace(/\\(.)/g, (a, c) => (c === "n" ? "\n" : c));
      out.push({ name: m[1], labels: labels, value: Number(m[3]) });
    }
    return out;
  }
  function pct(used, limit) { return limit > 0 ? Math.min(100, Math.floor((used * 100) / limit)) : 0; }
  function level(used, limit) { const p = pct(used, limit); return p >= 90 ? "crit" : p >= 70 ? "warn" : "ok"; }
  function bar(used, limit, cls) {
    return '<div class="bar ' + cls + " " + level(used, limit) + '"><div style="width: ' + pct(used, limit) + '%"></div></div>';
  }
  function clock(d) { return d.toTimeString().slice(0, 8); }
  // age writes a token's age as the server-rendered page does.
  function age(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    return Math.floor(s / 3600) + " h " + String(Math.floor(s / 60) % 60).padStart(2, "0") + " min";
  }

  // chart draws an account's calls in the window against its limit (the
  // dashed line), over what this tab has seen: at least a minute, at most five.
  function chart(name, now) {
    const h = history[name] || [];
    const span = Math.min(keepMs, Math.max(60000, h.length ? now - h[0].t : 0));
    const pts = h.map((p) => {
      const x = 300 - ((now - p.t) / span) * 300;
      const y = 60 - (p.limit > 0 ? (p.used / p.limit) * 54 : 0);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    if (pts.length === 1) pts.unshift("0," + pts[0].split(",")[1]); // one sample: a level line
    return '<svg class="chart" viewBox="0 0 300 60" preserveAspectRatio="none" role="img" aria-label="calls in the window, last minutes">' +
      '<line x1="0" y1="6" x2="300" y2="6" class="limit"/><polyline points="' + pts.join(" ") + '"/></svg>';
  }

  function render(budget, samples, ready, now) {
    const gens = {}, fails = {}, req = {}, refreshes = {}, ages = {}, hour = {}, hourLimit = {}, scarce = {};
    let entries = 0, redisUp = null, redisErrors = 0, tracked = null;
    for (const s of samples) {
      switch (s.name) {
        case "caproxy_cache_entries": entries = s.value; break;
        case "caproxy_requests_total": if (s.labels.route === "aht") req[s.labels.outcome] = s.value; break;
        case "caproxy_refreshes_total": refreshes[s.labels.reason] = s.value; break;
        case "caproxy_redis_up": redisUp = s.value === 1; break;
        case "caproxy_redis_errors_total": redisErrors = s.value; break;
        case "caproxy_token_generations_total": gens[s.labels.account] = s.value; break;
        case "caproxy_token_generation_failures_total": fails[s.labels.account] = s.value; break;
        case "caproxy_token_age_seconds": ages[s.labels.account] = s.value; break;
        case "caproxy_token_generations_hour": hour[s.labels.account] = s.value; break;
        case "caproxy_token_generations_hour_limit": hourLimit[s.labels.account] = s.value; break;
        case "caproxy_refresh_scarce": scarce[s.labels.account] = s.value === 1; break;
        case "caproxy_refresh_tracked_keys": tracked = s.value; break;
      }
    }
    let html = '<section id="accounts">';
    const names = Object.keys(budget).sort();
    for (const name of names) {
      const b = budget[name], used = b.limit - b.remaining;
      (history[name] = history[name] || []).push({ t: now, used: used, limit: b.limit });
      while (history[name].length && now - history[name][0].t > keepMs) history[name].shift();
      html += '<article class="account" data-account="' + esc(name) + '" data-used="' + used + '" data-limit="' + b.limit +
        '" data-remaining="' + b.remaining + '" data-mode="' + esc(b.mode) + '"' +
        (name in gens ? ' data-generations="' + gens[name] + '"' : "") +
        (name in hour ? ' data-generations-hour="' + hour[name] + '"' : "") +
        (name in ages ? ' data-token-age="' + ages[name] + '"' : "") +
        (name in scarce ? ' data-scarce="' + (scarce[name] ? "scarce" : "enough") + '"' : "") +
        ' data-samples="' + history[name].length + '">';
      html += "<h2>" + esc(name) + ' <span class="pill mode-' + esc(b.mode) + '">' + esc(b.mode) + "</span></h2>";
      html += bar(used, b.limit, "");
      html += '<p class="nums"><b class="used">' + used + "</b> / " + b.limit + " AHT calls in the trailing window" +
        (b.next_free ? " · next slot frees " + clock(new Date(b.next_free)) : "") + "</p>";
      html += chart(name, now);
      html += '<p class="token">' + (name in gens ? "token " + (name in ages ? 'generated <b class="token-age">' + age(ages[name]) + "</b> ago" : "not held yet") +
        " · generations this hour " + (name in hour ? '<b class="gens-hour' + (hour[name] >= 7 ? " bad" : "") + '">' + hour[name] + "</b>/" + (hourLimit[name] || 10) : '<b class="gens-hour">?</b>') +
        ' · <span class="muted"><b class="gens">' + gens[name] + "</b> since start</span>" : "apikey account (no token)") +
        (fails[name] ? ' · <span class="bad">' + fails[name] + " failed</span>" : "") + "</p>";
      const routes = Object.keys(b.routes || {}).sort();
      if (routes.length) {
        html += '<table class="routes">';
        for (const rn of routes) {
          const r = b.routes[rn], ru = r.limit - r.remaining;
          html += '<tr data-route="' + esc(rn) + '" data-used="' + ru + '" data-limit="' + r.limit + '"><td>' + esc(rn) + "</td><td>" +
            bar(ru, r.limit, "small") + '</td><td class="r">' + ru + "/" + r.limit + "</td></tr>";
        }
        html += "</table>";
      }
      html += "</article>";
    }
    if (!names.length) html += "<p>No accounts configured.</p>";
    html += '</section><section id="side">';

    // Hit ratio over the last minute, from this tab's counter samples.
    const c = { t: now, hit: req.hit || 0, miss: req.miss || 0, stale: req.stale || 0, bypass: req.bypass || 0 };
    counters.push(c);
    while (counters.length && now - counters[0].t > 60000) counters.shift();
    const first = counters[0];
    const answered = (x) => x.hit + x.miss + x.stale + x.bypass;
    let ratio = "–", span = "last minute";
    if (counters.length > 1 && answered(c) > answered(first)) {
      ratio = Math.round(((c.hit - first.hit) * 100) / (answered(c) - answered(first))) + "%";
      span = "last " + Math.round((now - first.t) / 1000) + " s";
    } else if (counters.length > 1) {
      span = "no answers in the last " + Math.round((now - first.t) / 1000) + " s";
    }
    html += '<div class="box" id="cache" data-entries="' + entries + '" data-hit="' + c.hit + '" data-miss="' + c.miss + '" data-stale="' + c.stale + '">' +
      "<h3>Cache</h3><p><b id=\"cache-entries\">" + entries + "</b> entries</p>" +
      '<p>hit ratio <b id="hit-ratio">' + ratio + '</b> <span class="muted" id="hit-ratio-span">' + span + "</span></p>" +
      '<p><b id="stale-served">' + c.stale + "</b> stale answers served · <b>" + (req.limited || 0) + "</b> refused (429)</p></div>";
    html += '<div class="box" id="refresh"' + (tracked === null ? "" : ' data-tracked="' + tracked + '"') + "><h3>Refresh-ahead</h3><p>" +
      (tracked === null ? '<span class="muted">no scheduler</span>' : '<b id="refresh-tracked">' + tracked + "</b> keys tracked") + "</p><p>budget ";
    for (const n of names) {
      if (!(n in scarce)) continue;
      html += '<span class="scarce" data-scarce-account="' + esc(n) + '">' + esc(n) + ' <b class="' + (scarce[n] ? "bad" : "good") + '">' + (scarce[n] ? "scarce" : "enough") + "</b></span> ";
    }
    html += '<span class="muted">(scarce: stale keys wait for budget, their clients get the stale answer at once)</span></p><p>refreshes: ';
    for (const k of Object.keys(refreshes).sort()) html += esc(k) + ' <b data-reason="' + esc(k) + '">' + refreshes[k] + "</b> ";
    html += "</p></div>";
    html += '<div class="box" id="redisbox"><h3>Redis</h3>';
    if (redisUp === null) html += '<p class="muted">not configured: budgets, tokens and cache live in this process</p>';
    else html += "<p>" + (redisUp ? '<b class="good">up</b> (circuit closed)' : '<b class="bad">down</b> (circuit open; budgets ' + names.map((n) => esc(budget[n].mode)).join(" ") + ")") +
      '</p><p><b id="redis-errors">' + redisErrors + "</b> failed Redis calls</p>";
    html += "</div></section>";
    document.getElementById("main").innerHTML = html;

    const rd = document.getElementById("ready");
    rd.className = "pill " + (ready.ok ? "ok" : "crit");
    rd.dataset.ready = String(ready.ok);
    rd.title = ready.text;
    rd.textContent = ready.ok ? "ready" : "not ready";
    const rs = document.getElementById("redis");
    rs.dataset.redis = redisUp === null ? "off" : redisUp ? "up" : "down";
    rs.className = "pill " + (redisUp === null ? "off" : redisUp ? "ok" : "crit");
    rs.textContent = redisUp === null ? "no Redis (single node)" : redisUp ? "Redis up · breaker closed" : "Redis down · breaker open";
  }

  async function refresh() {
    const upd = document.getElementById("updated");
    try {
      const [b, m, r] = await Promise.all([fetch("/admin/budget", { cache: "no-store" }), fetch("/metrics", { cache: "no-store" }), fetch("/readyz", { cache: "no-store" })]);
      if (!b.ok) throw new Error("/admin/budget answered " + b.status);
      const budget = await b.json();
      const samples = m.ok ? parseProm(await m.text()) : [];
      const ready = { ok: r.ok, text: (await r.text()).trim() };
      render(budget, samples, ready, Date.now());
      document.body.dataset.source = "live";
      upd.textContent = "live · updated " + clock(new Date());
      upd.classList.remove("bad");
    } catch (e) {
      upd.textContent = "refresh failed: " + e.message + " (showing the last numbers)";
      upd.classList.add("bad");
    }
    setTimeout(refresh, every);
  }
  refresh();
})();
