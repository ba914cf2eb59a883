"""``propylon control``: the store, the translation loop, and the REST API on one event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from pathlib import Path

from propylon.admin.api import ControlAPI
from propylon.controlplane import httpd
from propylon.controlplane.state import ControlState
from propylon.controlplane.store import open_store, store_location
from propylon.controlplane.token import load_or_create_token
from propylon.controlplane.ui import Explainer
from propylon.runtime.heap_trim import settle_heap

log = logging.getLogger("propylon.controlplane")


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def run_control(
    host: str,
    port: int,
    store_url: str,
    token_file: Path,
    tls: ssl.SSLContext | None = None,
    explainer: Explainer | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code. ``explainer`` runs the dashboard's
    explain form (given by the command, which may load the proxy's code)."""
    token = load_or_create_token(token_file)
    try:
        store = await open_store(store_url)
    except Exception as exc:
        log.error("cannot open store %s: %s", store_url, exc)
        return 1
    state = ControlState(store, replica=f"{socket.gethostname()}:{os.getpid()}")
    api = ControlAPI(state, token, secure=tls is not None, explainer=explainer)
    server = await httpd.serve(api.handle, host, port, tls)
    settle_heap()  # large blocks (listings, IR texts) given back when freed
    translator = asyncio.ensure_future(state.run())
    rollouts = asyncio.ensure_future(state.watch_rollouts())
    log.info("control plane on %s://%s:%d, store %s, token in %s",
             "https" if tls else "http", host, port, store_location(store_url), token_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    translator.cancel()
    rollouts.cancel()
    await state.fleet_records.flush()
    await store.close()
    return 0
