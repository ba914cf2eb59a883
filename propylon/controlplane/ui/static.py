"""The dashboard's stylesheet and its one script (no build step, no CDN, no inline code so the
CSP can forbid inline scripts). ``app.js`` polls ``/ui/live.json`` every ``POLL_SECONDS`` and
writes what changed with ``textContent`` only."""

from __future__ import annotations

POLL_SECONDS = 2

APP_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d232a; background: #f6f7f9; }
header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.2rem;
  background: #1d2b3a; color: #fff; }
header a { color: #cfe3ff; margin-right: 1rem; text-decoration: none; }
header a[aria-current] { color: #fff; font-weight: 600; }
header .logout { margin-left: auto; }
main { padding: 1rem 1.2rem; }
section.gateway, section.rollout { background: #fff; border: 1px solid #d9dee4;
  border-radius: 6px; padding: .4rem 1rem 1rem; margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e3e7ec;
  vertical-align: top; }
tr.invalid td, tr.nack td { background: #fff1f0; }
.reason { color: #a8071a; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.facts dt { color: #5b6670; }
dl.facts dd { margin: 0; }
.message { background: #e6f4ff; border: 1px solid #91caff; padding: .4rem .8rem; }
.error { background: #fff1f0; border: 1px solid #ffa39e; padding: .4rem .8rem; }
form.explain, form.login { display: grid; gap: .5rem; max-width: 40rem; }
form.explain label, form.login label { display: grid; gap: .2rem; }
.actions { display: flex; gap: .5rem; }
pre.explanation { background: #fff; border: 1px solid #d9dee4; padding: .8rem; }
code { font-size: 12px; }
"""

APP_JS = """
"use strict";
(function () {
  function set(element, text) {
    if (element && element.textContent !== text) { element.textContent = text; }
  }
  async function poll() {
    let data;
    try {
      const answer = await fetch("/ui/live.json", {credentials: "same-origin"});
      if (answer.redirected || !answer.ok) { return; }
      data = await answer.json();
    } catch (error) { return; }
    document.querySelectorAll("[data-gateway]").forEach(function (section) {
      const live = data.gateways[section.dataset.gateway];
      if (!live) { return; }
      set(section.querySelector("[data-live=desired]"), live.version);
      set(section.querySelector("[data-live=rate]"), live.rate);
      set(section.querySelector("[data-live=rollout]"), live.rollout);
      section.querySelectorAll("tr[data-proxy]").forEach(function (row) {
        const proxy = live.proxies[row.dataset.proxy];
        if (!proxy) { return; }
        set(row.querySelector("[data-live=version]"), proxy.version);
        set(row.querySelector("[data-live=state]"), proxy.state);
        set(row.querySelector("[data-live=seen]"), proxy.seen);
      });
    });
  }
  if (document.querySelector("[data-gateway]")) {
    poll();
    setInterval(poll, POLL_MS);
  }
})();
""".replace("POLL_MS", str(POLL_SECONDS * 1000))

ASSETS: dict[str, tuple[bytes, str]] = {
    "app.css": (APP_CSS.encode(), "text/css; charset=utf-8"),
    "app.js": (APP_JS.encode(), "text/javascript; charset=utf-8"),
}
