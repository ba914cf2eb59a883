"""CORS in a real browser: headless Chromium loads a page from one origin that calls the API
through the gateway on another origin (a preflighted PUT with a custom header)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.policies._helpers import EDGE_AND_ECHO, GatewayProc, Upstream, free_port

PAGE = """<!doctype html><html><body><div id="out">pending</div><script>
var out = document.getElementById('out');
try {
  var xhr = new XMLHttpRequest();
  xhr.open('PUT', 'http://127.0.0.1:GW/cors/item', false);
  xhr.setRequestHeader('X-Custom', '1');
  xhr.send('{}');
  out.textContent = 'status=' + xhr.status + ' method=' + JSON.parse(xhr.responseText).method;
} catch (e) {
  out.textContent = 'blocked=' + e.name;
}
</script></body></html>"""

CONFIG = EDGE_AND_ECHO + """apiVersion: propylon.dev/v1
kind: Route
metadata: {name: api}
spec:
  rules:
    - matches: [{path: {prefix: /cors}}]
      forward: {backends: [{upstream: echo}]}
      policies:
        - cors:
            allowOrigins: ["http://127.0.0.1:ALLOWED"]
            allowMethods: [GET, PUT]
            allowHeaders: [x-custom, content-type]
"""


class PageServer:
    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (Debian package chromium)")


def dump_dom(url: str, profile: Path) -> str:
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=90,
    )
    return proc.stdout


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
          ) -> Iterator[tuple[PageServer, PageServer]]:
    gw_port = free_port()
    page = PAGE.replace("GW", str(gw_port))
    allowed, other = PageServer(page), PageServer(page)
    config = (CONFIG.replace("UPSTREAM", str(upstream.port))
              .replace("ALLOWED", str(allowed.port)))
    gw = GatewayProc(tmp_path_factory.mktemp("cors"), config, port=gw_port)
    yield allowed, other
    gw.stop()
    allowed.stop()
    other.stop()


def test_browser_allows_listed_origin_and_blocks_others(
    sites: tuple[PageServer, PageServer], tmp_path: Path
) -> None:
    allowed, other = sites
    dom = dump_dom(f"http://127.0.0.1:{allowed.port}/page.html", tmp_path / "p1")
    assert "status=200 method=PUT" in dom, dom[-500:]
    dom = dump_dom(f"http://127.0.0.1:{other.port}/page.html", tmp_path / "p2")
    assert "blocked=NetworkError" in dom, dom[-500:]
