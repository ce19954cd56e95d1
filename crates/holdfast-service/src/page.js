// The live status page's script (inlined into the page by page.rs; no external resources).
// It polls api/snapshot (relative to the page, so it works behind a reverse proxy under a path
// prefix) with the credentials the page was loaded with, and updates the report in place. When
// the service stops answering, or answers with data that is too old, it says so in a red
// banner and greys every green mark: a dead service never looks green.
(function () {
  "use strict";
  var q = new URLSearchParams(location.search);
  var every = Math.max(1, Number(q.get("every")) || 5) * 1000;
  var stale = Math.max(10, Number(q.get("stale")) || 600);
  var url = new URL("api/snapshot", location.href);
  url.search = "";
  var lastAnswer = new Date();
  var silentSince = null;
  var body = document.body;

  function $(id) { return document.getElementById(id); }
  function iso(d) { return d.toISOString().slice(0, 19).replace("T", " ") + " UTC"; }
  function when(t) { return t ? String(t).slice(0, 19).replace("T", " ") : "\u2014"; }
  function dur(s) {
    if (s === null || s === undefined) { return "\u2014"; }
    if (s < 0) { return "-" + dur(-s); }
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60), x = Math.floor(s % 60), p = [];
    if (d) { p.push(d + "d"); }
    if (h) { p.push(h + "h"); }
    if (m) { p.push(m + "m"); }
    if (x || !p.length) { p.push(x + "s"); }
    return p.join(" ");
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  var VERDICT = {
    met: ["ok", "met"], breached: ["bad", "breached"],
    not_measured: ["bad", "not measured"], not_applicable: ["na", "n/a"]
  };
  function badge(v) {
    var b = VERDICT[v] || ["bad", String(v)];
    return el("span", b[0], b[1]);
  }
  function put(cell, nodes) {
    if (!cell) { return; }
    cell.textContent = "";
    [].concat(nodes).forEach(function (n) {
      cell.appendChild(typeof n === "string" ? document.createTextNode(n) : n);
    });
  }
  // Rebuild a table's rows under its header row.
  function rows(table, items, cols, empty) {
    if (!table) { return; }
    while (table.rows.length > 1) { table.deleteRow(1); }
    if (!items.length) {
      var c = table.insertRow().insertCell();
      c.colSpan = cols;
      c.className = "na";
      c.textContent = empty;
      return;
    }
    items.forEach(function (cells) {
      var r = table.insertRow();
      cells.forEach(function (x) { put(r.insertCell(), x); });
    });
  }

  function source(row, name) {
    var tr = document.querySelector('tr[data-source="' + CSS.escape(name) + '"]');
    if (!tr) { return false; }
    var f = function (k) { return tr.querySelector('[data-f="' + k + '"]'); };
    var st = row.status;
    var probs = [];
    (st.problems || []).forEach(function (p, i) {
      if (i) { probs.push(el("br")); }
      probs.push(p);
    });
    put(f("problems"), probs);
    put(f("age"), dur(st.age_seconds) + " ago");
    put(f("rpo"), badge(st.rpo));
    put(f("drill"), st.drill_seconds === null || st.drill_seconds === undefined
      ? "never" : st.drill_seconds.toFixed(1) + "s");
    put(f("rto"), badge(st.rto));
    put(f("copies"), badge(st.copies));
    var j = row.last_job;
    put(f("job"), j ? j[0] + " " + j[1] + " " + String(j[2]).slice(5, 16).replace("T", " ") : "\u2014");
    return true;
  }

  function apply(s, serverNow) {
    var r = s.status;
    if (!r) { return; }
    if (body.hasAttribute("data-hf-empty")) { location.reload(); return; }
    put($("hf-computed"), when(r.now));
    var shown = {}, missing = [];
    r.sources.forEach(function (row) {
      shown[row.facts.name] = true;
      if (!source(row, row.facts.name)) { missing.push(row.facts.name); }
    });
    document.querySelectorAll("tr[data-source]").forEach(function (tr) {
      if (!shown[tr.getAttribute("data-source")]) {
        missing.push(tr.getAttribute("data-source"));
        tr.classList.add("hf-gone");
      }
    });
    var n = $("hf-notice");
    n.hidden = !missing.length;
    n.textContent = missing.length
      ? "the workload's sources changed (" + missing.join(", ") + "): reload the page to see them" : "";
    var failing = r.controls.filter(function (c) { return !c.passed; }).length;
    var sum = $("hf-summary");
    if (failing || r.unreadable.length || r.alarms.length) {
      sum.className = "summary bad";
      sum.textContent = failing + " control(s) failing" +
        (r.unreadable.length ? ", " + r.unreadable.length + " repository(ies) unreadable" : "") +
        (r.alarms.length ? ", " + r.alarms.length + " alarm(s)" : "");
    } else {
      sum.className = "summary ok";
      sum.textContent = "every control passes";
    }
    rows($("hf-controls"), r.controls.map(function (c) {
      return [c.title, el("span", c.passed ? "ok" : "bad", c.passed ? "pass" : "fail"), c.failing.join(", ")];
    }), 3, "none");
    put($("hf-at"), when(s.at));
    var age = serverNow ? Math.round((serverNow - Date.parse(s.at)) / 1000) : null;
    put($("hf-age"), age === null ? "" : dur(Math.max(0, age)) + " before the service's last answer");
    rows($("hf-running"), s.running.map(function (j) {
      return [j.source, j.kind, when(j.started), String(j.pid)];
    }), 4, "none");
    rows($("hf-tasks"), s.tasks.map(function (t) {
      return [t.source, el("span", t.health === "running" ? "ok" : "bad", t.health), when(t.since),
        String(t.restarts), t.last_error || ""];
    }), 5, "none");
    var cfg = $("hf-config");
    cfg.hidden = !s.config.error;
    cfg.textContent = s.config.error ? "the newest reload of the workload failed, the previous one stays in use: " + s.config.error : "";
    return age;
  }

  function trouble(why) {
    body.classList.add("hf-dead");
    var b = $("hf-banner");
    b.textContent = why;
    b.hidden = false;
  }
  function poll() {
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, Math.max(every, 10000));
    fetch(url, { credentials: "same-origin", cache: "no-store", signal: ctl.signal,
      headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        var date = Date.parse(r.headers.get("Date") || "");
        return r.json().then(function (s) { return [s, isNaN(date) ? null : date]; });
      })
      .then(function (got) {
        lastAnswer = new Date();
        silentSince = null;
        var age = apply(got[0], got[1]);
        put($("hf-checked"), iso(lastAnswer));
        if (age !== null && age !== undefined && age > stale) {
          trouble("the service answers, but its data was computed " + dur(age) +
            " before its answer (more than " + dur(stale) + "): what this page shows may be out of date");
        } else {
          body.classList.remove("hf-dead");
          $("hf-banner").hidden = true;
        }
      })
      .catch(function (e) {
        if (!silentSince) { silentSince = new Date(); }
        trouble("service not answering since " + iso(silentSince) + " (" +
          (e && e.name === "AbortError" ? "no answer within " + dur(Math.max(every, 10000) / 1000) : (e && e.message) || e) +
          "); last answer " + iso(lastAnswer) + ": what this page shows may be out of date");
      })
      .finally(function () {
        clearTimeout(timer);
        setTimeout(poll, every);
      });
  }
  put($("hf-every"), dur(every / 1000));
  poll();
})();
