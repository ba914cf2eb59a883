"""The dashboard's pages as Jinja2 templates, autoescaped: every value from the store, a proxy
or a form is HTML-escaped where it is written. Templates live here as strings (no package data
to ship); ``render`` is the only way out."""

from __future__ import annotations

from typing import Any

from jinja2 import DictLoader, Environment, StrictUndefined

_BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · Propylon</title>
<link rel="stylesheet" href="/ui/static/app.css">
<script src="/ui/static/app.js" defer></script>
</head>
<body>
<header>
  <strong>Propylon</strong>
  {% if csrf %}
  <nav>
    <a href="/ui/" {% if page == "fleets" %}aria-current="page"{% endif %}>Fleets</a>
    <a href="/ui/resources" {% if page == "resources" %}aria-current="page"{% endif %}>Resources</a>
    <a href="/ui/explain" {% if page == "explain" %}aria-current="page"{% endif %}>Explain</a>
  </nav>
  <form method="post" action="/ui/logout" class="logout">
    <input type="hidden" name="csrf" value="{{ csrf }}">
    <button type="submit">Log out</button>
  </form>
  {% endif %}
</header>
<main>
{% if message %}<p class="message" role="status">{{ message }}</p>{% endif %}
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

_LOGIN = """{% extends "base.html" %}
{% block main %}
<h1>Log in</h1>
<form method="post" action="/ui/login" class="login">
  <label>Bearer token <input type="password" name="token" autocomplete="current-password"
    required autofocus></label>
  <button type="submit">Log in</button>
</form>
<p class="hint">The token is the control plane's <code>--token-file</code>. It is kept in an
HttpOnly cookie for this site only.</p>
{% endblock %}
"""

_FLEETS = """{% extends "base.html" %}
{% block main %}
<h1>Fleets</h1>
{% for g in gateways %}
<section class="gateway" data-gateway="{{ g.gateway }}">
  <h2><a href="/ui/gateways/{{ g.gateway }}">{{ g.gateway }}</a></h2>
  <dl class="facts">
    <dt>Desired version</dt><dd><code data-live="desired">{{ g.version or "-" }}</code></dd>
    <dt>Requests</dt><dd data-live="rate">{{ g.rate }}</dd>
    <dt>Rollout</dt><dd data-live="rollout">{{ g.rollout_text }}</dd>
    {% if g.note %}<dt>Note</dt><dd class="reason">{{ g.note }}</dd>{% endif %}
  </dl>
  {% if g.proxies %}
  <table class="proxies">
    <thead><tr><th>Proxy</th><th>Version</th><th>Last report</th><th>Connected</th>
      <th>Last seen</th><th>Last error</th></tr></thead>
    <tbody>
    {% for p in g.proxies %}
    <tr data-proxy="{{ p.id }}" class="{{ 'nack' if p.state == 'NACK' else '' }}">
      <td>{{ p.id }}</td><td data-live="version"><code>{{ p.version }}</code></td>
      <td data-live="state">{{ p.state }}</td>
      <td>{{ "yes" if p.connected else "no" }}</td><td data-live="seen">{{ p.seen }}</td>
      <td>{{ p.error }}</td>
    </tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}<p>No proxy has connected.</p>{% endif %}
</section>
{% else %}
<p>No Gateway yet.</p>
{% endfor %}
{% endblock %}
"""

_RESOURCES = """{% extends "base.html" %}
{% block main %}
<h1>Resources</h1>
<p>{{ invalid }} invalid of {{ rows|length }}; invalid ones first.</p>
<table class="resources">
  <thead><tr><th>State</th><th>Kind</th><th>Resource</th><th>Reasons</th><th>Gateways</th>
  </tr></thead>
  <tbody>
  {% for r in rows %}
  <tr class="{{ 'invalid' if r.state != 'Accepted' else '' }}"
      data-resource="{{ r.kind }} {{ r.key }}">
    <td>{{ r.state }}</td><td>{{ r.kind }}</td><td>{{ r.key }}</td>
    <td>{% for reason in r.reasons %}<div class="reason">{{ reason }}</div>{% endfor %}</td>
    <td>{{ r.gateways|join(", ") }}</td>
  </tr>
  {% endfor %}
  </tbody>
</table>
{% endblock %}
"""

_GATEWAY = """{% extends "base.html" %}
{% block main %}
<h1>Gateway {{ key }}</h1>
<p>Version <code>{{ version }}</code>. <a href="/ui/explain?gateway={{ key|urlencode }}">Explain a
request</a></p>
<h2>Listeners</h2>
<table class="listeners">
  <thead><tr><th>Name</th><th>Address</th><th>Protocol</th><th>Hostnames</th></tr></thead>
  <tbody>
  {% for l in listeners %}
  <tr><td>{{ l.name }}</td><td>{{ l.address }}:{{ l.port }}</td><td>{{ l.protocol }}</td>
    <td>{{ l.hostnames|join(", ") or "any" }}</td></tr>
  {% endfor %}
  </tbody>
</table>
<h2>Rollout</h2>
{% if rollout %}
<section class="rollout" data-gateway="{{ key }}">
  <p data-live="rollout">{{ rollout_text }}</p>
  <dl class="facts">
    <dt>From</dt><dd><code>{{ rollout.stable }}</code></dd>
    <dt>To</dt><dd><code>{{ rollout.candidate }}</code></dd>
    <dt>5xx ratio, new</dt><dd>{{ "%.4f"|format(rollout.newVersion.ratio) }}
      ({{ rollout.newVersion.errors5xx }}/{{ rollout.newVersion.requests }})</dd>
    <dt>5xx ratio, old</dt><dd>{{ "%.4f"|format(rollout.oldVersion.ratio) }}
      ({{ rollout.oldVersion.errors5xx }}/{{ rollout.oldVersion.requests }})</dd>
    <dt>Bound</dt><dd>+{{ rollout.maxErrorRatio }} after {{ rollout.minRequests }} requests</dd>
    {% if rollout.reason %}<dt>Reason</dt><dd class="reason">{{ rollout.reason }}</dd>{% endif %}
  </dl>
  <div class="actions">
  {% for action in ("pause", "resume", "abort") %}
    <form method="post" action="/ui/gateways/{{ key }}/rollout/{{ action }}">
      <input type="hidden" name="csrf" value="{{ csrf }}">
      <button type="submit">{{ action|capitalize }}</button>
    </form>
  {% endfor %}
  </div>
  <ol class="timeline">
  {% for e in timeline %}<li>+{{ e.offset }}s {{ e.event }} {{ e.details }}</li>{% endfor %}
  </ol>
</section>
{% else %}
<p>No rollout{{ "" if has_spec else " (the Gateway has no spec.rollout)" }}.</p>
{% endif %}
<h2>Route table</h2>
<p>Rules in the order the router tries them within each host.</p>
<form method="get" action="/ui/gateways/{{ key }}" class="filter">
  <label>Rules whose id, owner, hosts or paths contain
    <input name="q" value="{{ filter }}" size="30" maxlength="200"></label>
  <button type="submit">Filter</button>
</form>
<p class="pager">
  {%- set shown = rule_page.start + rules|length %}
  {% if rule_page.found %}Rules {{ rule_page.start + 1 }}-{{ shown }} of {{ rule_page.found }}
  {%- else %}No rules{% endif %}
  {%- if filter %} containing &ldquo;{{ filter }}&rdquo; ({{ total }} in all){% endif %}.
  {% if rule_page.previous is not none %}<a rel="prev" href="/ui/gateways/{{ key }}?{{
    {'q': filter, 'from': rule_page.previous}|urlencode }}">Previous</a>{% endif %}
  {% if rule_page.next is not none %}<a rel="next" href="/ui/gateways/{{ key }}?{{
    {'q': filter, 'from': rule_page.next}|urlencode }}">Next</a>{% endif %}
</p>
<table class="routes">
  <thead><tr><th>Rule</th><th>Owner</th><th>Hosts</th><th>Matches</th><th>Action</th>
    <th>Policies</th></tr></thead>
  <tbody>
  {% for r in rules %}
  <tr class="{{ 'invalid' if r.replaced else '' }}">
    <td>{{ r.id }}{% if r.replaced %} <strong>INVALID</strong>{% endif %}</td>
    <td>{{ r.route }}{% if r.via %}<div class="via">via {{ r.via }}</div>{% endif %}</td>
    <td>{{ r.hosts }}</td>
    <td>{% for m in r.matches %}<div>{{ m }}</div>{% endfor %}</td>
    <td>{{ r.action }}</td><td>{{ r.policies }}</td>
  </tr>
  {% endfor %}
  </tbody>
</table>
<h2>Upstreams</h2>
<ul>{% for u in upstreams %}<li>{{ u }}</li>{% endfor %}</ul>
{% endblock %}
"""

_EXPLAIN = """{% extends "base.html" %}
{% block main %}
<h1>Explain a request</h1>
<form method="get" action="/ui/explain" class="explain">
  <label>Gateway <select name="gateway">
    <option value="">every Gateway</option>
    {% for g in gateways %}
    <option value="{{ g }}" {{ "selected" if g == form.gateway else "" }}>{{ g }}</option>
    {% endfor %}
  </select></label>
  <label>Method <input name="method" value="{{ form.method }}" size="8"></label>
  <label>URL <input name="url" value="{{ form.url }}" size="60" required
    placeholder="http://shop.example.com:8080/api/items"></label>
  <label>Headers, one per line <textarea name="headers" rows="3"
    placeholder="x-canary: 1">{{ form.headers }}</textarea></label>
  <label>Listener (optional) <input name="listener" value="{{ form.listener }}"
    placeholder="8080, web or ns/gateway/web"></label>
  <button type="submit">Explain</button>
</form>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
{% if lines %}<pre class="explanation">{{ lines|join("\n") }}</pre>{% endif %}
{% endblock %}
"""

_MESSAGE = """{% extends "base.html" %}
{% block main %}<h1>{{ title }}</h1>{% endblock %}
"""

_ENV = Environment(
    loader=DictLoader({
        "base.html": _BASE, "login.html": _LOGIN, "message.html": _MESSAGE,
        "fleets.html": _FLEETS, "resources.html": _RESOURCES, "gateway.html": _GATEWAY,
        "explain.html": _EXPLAIN,
    }),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context: Any) -> bytes:
    context.setdefault("message", "")
    context.setdefault("csrf", "")
    return _ENV.get_template(template).render(**context).encode()

