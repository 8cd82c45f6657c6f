// Saga Explorer: the little the pages need beyond HTML. Every page works without it.
//
// - the saga page follows the saga live: it asks the live URL with If-None-Match every
//   few seconds (a 304 costs the server one primary-key read) and swaps the fragment in
//   place when the saga changed, keeping the scroll position;
// - "Copy as JSON" copies the saga's JSON from its data block;
// - the search form leaves empty controls out of the URL;
// - "/" focuses the quick box.
"use strict";

(function () {
  function $(sel, root) {
    return (root || document).querySelector(sel);
  }

  function setStatus(text, state) {
    const el = $("#live-status");
    if (!el) return;
    el.textContent = text;
    el.dataset.state = state;
  }

  function clock(d) {
    return d.toISOString().slice(11, 19) + "Z";
  }

  // --- live saga page -------------------------------------------------------------------
  function follow(live) {
    const url = live.dataset.liveUrl;
    const base = Math.max(250, parseInt(live.dataset.pollMs, 10) || 2000);
    let etag = live.dataset.etag || "";
    let delay = base;
    let timer = null;
    let failures = 0;

    async function tick() {
      timer = null;
      if (document.hidden) {
        return; // resumed by visibilitychange
      }
      try {
        const res = await fetch(url, {
          headers: etag ? { "If-None-Match": etag } : {},
          credentials: "same-origin",
          cache: "no-store",
        });
        if (res.status === 304) {
          failures = 0;
          delay = base;
          setStatus("Live · checked " + clock(new Date()), "live");
        } else if (res.ok) {
          const html = await res.text();
          const y = window.scrollY;
          live.innerHTML = html;
          window.scrollTo(0, y);
          etag = res.headers.get("ETag") || "";
          live.dataset.etag = etag;
          failures = 0;
          delay = base;
          setStatus("Live · updated " + clock(new Date()), "updated");
          live.dispatchEvent(new CustomEvent("saga:updated", { bubbles: true }));
        } else if (res.status === 401) {
          setStatus("Session ended: sign in again to keep following this saga.", "stopped");
          return;
        } else if (res.status === 404) {
          setStatus("This saga is no longer stored (removed by retention).", "stopped");
          return;
        } else {
          throw new Error("HTTP " + res.status);
        }
      } catch (err) {
        failures += 1;
        delay = Math.min(base * Math.pow(2, failures), 60000);
        setStatus("Live updates paused (tracker unreachable); retrying in " + Math.round(delay / 1000) + " s", "error");
      }
      schedule();
    }

    function schedule() {
      if (timer === null) timer = window.setTimeout(tick, delay);
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer === null) tick();
    });
    setStatus("Live · following this saga", "live");
    schedule();
  }

  // --- copy as JSON ---------------------------------------------------------------------
  function copyJson(button) {
    button.addEventListener("click", async function () {
      const block = $("#saga-json");
      if (!block) return;
      const text = JSON.stringify(JSON.parse(block.textContent), null, 2);
      let ok = false;
      try {
        await navigator.clipboard.writeText(text);
        ok = true;
      } catch (_) {
        // No clipboard permission (plain http on another host): select-and-copy instead.
        const area = document.createElement("textarea");
        area.value = text;
        area.setAttribute("readonly", "");
        area.className = "offscreen";
        document.body.appendChild(area);
        area.select();
        try {
          ok = document.execCommand("copy");
        } catch (_) {
          ok = false;
        }
        area.remove();
      }
      const label = button.textContent;
      button.textContent = ok ? "Copied" : "Copy failed";
      button.dataset.copied = ok ? "true" : "false";
      window.setTimeout(function () {
        button.textContent = label;
      }, 1500);
    });
  }

  // --- search form ----------------------------------------------------------------------
  function tidySearch(form) {
    form.addEventListener("submit", function () {
      for (const el of form.elements) {
        if (el.name && !el.disabled && (el.type !== "checkbox") && el.value === "") {
          el.disabled = true; // left out of the URL; re-enabled for the back button below
        }
      }
      window.setTimeout(function () {
        for (const el of form.elements) el.disabled = false;
      }, 0);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const live = $("#saga-live");
    if (live && live.dataset.liveUrl) follow(live);
    const copy = $("#copy-json");
    if (copy) copyJson(copy);
    const form = $("#search-form");
    if (form) tidySearch(form);
    document.addEventListener("keydown", function (e) {
      const t = e.target;
      const typing = t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
      if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
        const q = $("#go-q");
        if (q) {
          e.preventDefault();
          q.focus();
        }
      }
    });
  });
})();
