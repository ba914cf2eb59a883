"""The dashboard's routes under ``/ui/``, sans-IO like the API: ``Dashboard.handle(Request)``.

Authentication: the API's bearer token. ``POST /ui/login`` checks it and keeps it in the
``propylon_token`` cookie (HttpOnly, SameSite=Strict, Path=/ui, Secure over TLS); every other
page needs that cookie, and the cookie is good for ``/ui/`` only (the API keeps asking for the
``authorization`` header, so the cookie can never be used against it).

CSRF: state-changing requests are POSTs that need, besides the SameSite cookie, a form field
``csrf`` (an HMAC of the token, so it is worthless without it) and, when the browser sends
``Origin`` (or else ``Referer``), the dashboard's own origin. Reading pages (explain is a
GET form) changes nothing.

Explain runs ``propylon.explain`` through the ``Explainer`` the command wiring passes in (the
control plane's modules never import the proxy's code; ``propylon.cli.control`` does).

Pages are HTML from ``templates`` with autoescape; the live figures come from
``/ui/live.json``, which ``app.js`` polls every few seconds and writes with ``textContent``.
Answers carry a CSP without inline scripts, ``nosniff``, ``no-store`` and ``frame-ancestors
'none'``.

Routes:
  GET  /ui/login, POST /ui/login, POST /ui/logout
  GET  /ui/                       fleets per Gateway (proxies, versions, ACK/NACK, rollout)
  GET  /ui/resources              statuses and reasons, invalid first
  GET  /ui/gateways/{ns}/{name}   listeners, rollout (with actions), route table, upstreams
  POST /ui/gateways/{ns}/{name}/rollout/{pause|resume|abort}
  GET  /ui/explain                the explain form and its answer
  GET  /ui/live.json              rates, rollouts and proxy versions for the poll
  GET  /ui/static/app.css, /ui/static/app.js
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from propylon import ir
from propylon.controlplane.httpd import Reply, Request
from propylon.controlplane.rollout import RolloutRefused
from propylon.controlplane.state import ControlState
from propylon.controlplane.ui import static, views
from propylon.controlplane.ui.templates import render

# (snapshot, method, url, headers, listener or None) -> the explanation's lines; ValueError
# for a request it cannot place (an ambiguous listener, for instance)
Explainer = Callable[[ir.SnapshotIR, str, str, dict[str, str], str | None], list[str]]

COOKIE = "propylon_token"
ROLLOUT_ACTIONS = ("pause", "resume", "abort")
_SECURITY_HEADERS = [
    ("content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; connect-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
]

_FILTER_MAX = 200  # characters of the route table's filter


def _html(status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, body, "text/html; charset=utf-8",
                 [*_SECURITY_HEADERS, *(headers or [])])


def _redirect(location: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(303, b"", headers=[("location", location), *_SECURITY_HEADERS,
                                    *(headers or [])])


def _form(request: Request) -> dict[str, str]:
    if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        return {}
    text = request.body.decode("utf-8", "replace")
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _cookies(request: Request) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in request.headers.get("cookie", "").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            jar[name] = unquote(value)
    return jar


@dataclass
class Dashboard:
    state: ControlState
    token: str
    secure: bool = False  # served over TLS: the cookie gets Secure
    explainer: Explainer | None = None
    rates: views.RateMeter = field(default_factory=views.RateMeter)

    @property
    def csrf(self) -> str:
        return hmac.new(self.token.encode(), b"propylon-ui-csrf", hashlib.sha256).hexdigest()

    async def handle(self, request: Request) -> Reply:
        parts = [p for p in request.path.split("/") if p][1:]  # after "ui"
        method = "GET" if request.method == "HEAD" else request.method
        if parts[:1] == ["static"] and method == "GET":
            return self.asset("/".join(parts[1:]))
        if parts == ["login"]:
            return self.login(request) if method == "POST" else self.login_page()
        if not self._signed_in(request):
            return _redirect("/ui/login")
        if method == "POST":
            refusal = self._forged(request)
            if refusal:
                return _html(403, render("message.html", title="Refused", page="",
                                         message=refusal))
            return self.post(parts, _form(request))
        if method != "GET":
            return Reply(405, b"", headers=[("allow", "GET, HEAD, POST")])
        return await self.get(parts, request.query)

    # -- authentication and CSRF -----------------------------------------------------------
    def _signed_in(self, request: Request) -> bool:
        given = _cookies(request).get(COOKIE, "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _forged(self, request: Request) -> str:
        """Why a POST is refused as cross-site ("" when it is the dashboard's own)."""
        form = _form(request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), self.csrf.encode()):
            return "The form's CSRF token is missing or wrong: reload the page and try again."
        return self._wrong_origin(request)

    def _wrong_origin(self, request: Request) -> str:
        host = request.headers.get("host", "")
        own = f"{'https' if self.secure else 'http'}://{host}"
        origin = request.headers.get("origin")
        if origin is not None:
            return "" if origin == own else f"Refused: the request came from {origin}."
        referer = request.headers.get("referer")
        if referer is not None and not (referer == own or referer.startswith(own + "/")):
            return "Refused: the request came from another site."
        return ""

    def login_page(self, status: int = 200, message: str = "") -> Reply:
        return _html(status, render("login.html", title="Log in", page="login",
                                    message=message))

    def login(self, request: Request) -> Reply:
        refusal = self._wrong_origin(request)
        if refusal:
            return self.login_page(403, refusal)
        given = _form(request).get("token", "").strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return self.login_page(401, "Wrong token.")
        cookie = (f"{COOKIE}={quote(self.token, safe='')}; Path=/ui; HttpOnly; "
                  f"SameSite=Strict{'; Secure' if self.secure else ''}")
        return _redirect("/ui/", [("set-cookie", cookie)])

    # -- pages ---------------------------------------------------------------------------
    async def get(self, parts: list[str], query: dict[str, str]) -> Reply:
        message = query.get("message", "")
        if parts == []:
            return await self.fleets(message)
        if parts == ["resources"]:
            return self.resources(message)
        if parts == ["explain"]:
            return await self.explain(query)
        if parts == ["live.json"]:
            return Reply(200, json.dumps(await self.live()).encode(),
                         headers=_SECURITY_HEADERS)
        if len(parts) == 3 and parts[0] == "gateways":
            return self.gateway(f"{parts[1]}/{parts[2]}", message, query)
        return self._not_found()

    def post(self, parts: list[str], form: dict[str, str]) -> Reply:
        if parts == ["logout"]:
            return _redirect("/ui/login", [("set-cookie", f"{COOKIE}=; Path=/ui; Max-Age=0; "
                                                          "HttpOnly; SameSite=Strict")])
        if len(parts) == 5 and parts[0] == "gateways" and parts[3] == "rollout" \
                and parts[4] in ROLLOUT_ACTIONS:
            key = f"{parts[1]}/{parts[2]}"
            if key not in self.state.snapshots:
                return self._not_found()
            try:
                self.state.act_on_rollout(key, parts[4])
                message = f"Rollout: {parts[4]} done."
            except RolloutRefused as exc:
                message = str(exc)
            return _redirect(f"/ui/gateways/{key}?{urlencode({'message': message})}")
        return self._not_found()

    def _not_found(self) -> Reply:
        return _html(404, render("message.html", title="Not found", page="",
                                 csrf=self.csrf, message="No such page."))

    async def fleets(self, message: str) -> Reply:
        now = time.time()
        gateways = [{
            "gateway": fleet["gateway"], "version": fleet["version"],
            "rollout_text": views.rollout_text(fleet.get("rollout")),
            "note": fleet.get("note", ""),
            "rate": views.rate_text(self.rates.rate(
                fleet["gateway"], views.traffic_totals(fleet["proxies"]))),
            "proxies": views.proxy_rows(fleet["proxies"], now),
        } for fleet in await self.state.fleet()]
        return _html(200, render("fleets.html", title="Fleets", page="fleets",
                                 gateways=gateways, csrf=self.csrf, message=message))

    def resources(self, message: str) -> Reply:
        rows = views.resource_rows(self.state.statuses)
        invalid = sum(1 for r in rows if r["state"] != "Accepted")
        return _html(200, render("resources.html", title="Resources", page="resources",
                                 rows=rows, invalid=invalid, csrf=self.csrf, message=message))

    def gateway(self, key: str, message: str, query: dict[str, str]) -> Reply:
        snapshot = self.state.snapshots.get(key)
        if snapshot is None:
            return self._not_found()
        gateway = snapshot.gateways[0]
        rollout = self.state.rollouts.to_json(key)
        text = query.get("q", "")[:_FILTER_MAX]
        start = int(query["from"]) if query.get("from", "").isdigit() else 0
        page = views.rule_page(gateway, start, text)
        return _html(200, render(
            "gateway.html", title=f"Gateway {key}", page="gateway", key=key,
            version=snapshot.version, listeners=gateway.listeners, rollout=rollout,
            rollout_text=views.rollout_text(rollout),
            timeline=views.timeline_rows(rollout) if rollout else [],
            has_spec=key in self.state.rollouts.current, rules=page.rows, rule_page=page,
            filter=text, total=len(gateway.rules),
            upstreams=views.upstream_lines(gateway), csrf=self.csrf, message=message))

    async def explain(self, query: dict[str, str]) -> Reply:
        form = {name: query.get(name, "") for name in ("gateway", "method", "url", "headers",
                                                       "listener")}
        form["method"] = form["method"] or "GET"
        lines: list[str] = []
        error = ""
        if form["url"]:
            try:
                lines = await asyncio.to_thread(self._explain, form)
            except ValueError as exc:  # ListenerChoiceError, bad headers, unknown Gateway
                error = str(exc)
        return _html(200, render("explain.html", title="Explain", page="explain",
                                 gateways=sorted(self.state.snapshots), form=form,
                                 lines=lines, error=error, csrf=self.csrf))

    def _explain(self, form: dict[str, str]) -> list[str]:
        if self.explainer is None:
            raise ValueError("explain is not available in this process")
        chosen = [s for k, s in sorted(self.state.snapshots.items())
                  if not form["gateway"] or k == form["gateway"]]
        if not chosen:
            raise ValueError(f"no Gateway {form['gateway']}")
        snapshot = ir.SnapshotIR(gateways=tuple(g for s in chosen for g in s.gateways))
        url = form["url"] if "://" in form["url"] else f"http://{form['url']}"
        return self.explainer(snapshot, form["method"], url,
                              views.parse_headers(form["headers"]), form["listener"] or None)

    async def live(self) -> dict[str, Any]:
        now = time.time()
        return {"gateways": {
            fleet["gateway"]: {
                "version": fleet["version"] or "-",
                "rate": views.rate_text(self.rates.rate(
                    fleet["gateway"], views.traffic_totals(fleet["proxies"]))),
                "rollout": views.rollout_text(fleet.get("rollout")),
                "phase": (fleet.get("rollout") or {}).get("phase"),
                "proxies": {row["id"]: {"version": row["version"], "state": row["state"],
                                        "seen": row["seen"]}
                            for row in views.proxy_rows(fleet["proxies"], now)},
            } for fleet in await self.state.fleet()}}

    @staticmethod
    def asset(name: str) -> Reply:
        found = static.ASSETS.get(name)
        if found is None:
            return Reply(404, b"", headers=_SECURITY_HEADERS)
        body, content_type = found
        return Reply(200, body, content_type, list(_SECURITY_HEADERS))
