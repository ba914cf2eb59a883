"""Separate networks for the end-to-end tests: three network namespaces joined by veth pairs.

    consumer (10.231.7.2, .3) --veth-- (.1) gateway (.17) --veth-- (10.231.7.18) services

All addresses are in 10.231.7.0/24 and exist only inside the namespaces created here. The
gateway namespace does not forward packets (``net.ipv4.ip_forward=0``) and the consumer has no
route to the services' link, so the services are reachable from the consumer only through a
proxy running in the gateway namespace. ``Networks.create`` builds it; ``destroy`` deletes the
namespaces (their veth pairs go with them). When namespaces cannot be created (not root, no
iproute2), ``loopback()`` gives the same interface with every address 127.0.0.1 and ``ns``
None, and ``isolated`` False.

``PROPYLON_E2E_NETNS`` chooses: ``auto`` (default: namespaces, loopback when they cannot be
made), ``off`` (loopback, as where namespaces are unavailable: how the fallback is tested) or
``on`` (namespaces required: failing to make them is an error, never a silent fallback).
A test's check that holds only with namespaces calls ``Networks.skip`` in loopback mode, which
prints that the check was not run and records it in ``skipped``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

ENV = "PROPYLON_E2E_NETNS"
MODES = ("auto", "on", "off")


@dataclass
class Networks:
    consumer_ns: str | None
    gateway_ns: str | None
    services_ns: str | None
    consumer_ip: str = "127.0.0.1"
    gateway_front_ip: str = "127.0.0.1"  # the consumer-facing side of the gateway
    gateway_back_ip: str = "127.0.0.1"   # the services-facing side
    services_ip: str = "127.0.0.1"
    isolated: bool = False
    consumer_ip2: str | None = None  # a second consumer address (another client)
    skipped: list[str] = field(default_factory=list)  # checks not run (loopback fallback)

    @property
    def namespaces(self) -> list[str]:
        return [n for n in (self.consumer_ns, self.gateway_ns, self.services_ns) if n]

    def skip(self, check: str) -> None:
        """Say (printed, and recorded in ``skipped``) that ``check``, which holds only with
        namespaces, is not run on loopback."""
        assert not self.isolated, f"{check}: skipped although namespaces are in use"
        self.skipped.append(check)
        print(f"[e2e] loopback fallback: {check} NOT checked (needs network namespaces)")


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip", *args] if ns is None else ["ip", "-n", ns, *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=10)


def create(tag: str) -> Networks:
    """Three namespaces named ``pe-<tag>-<pid>-{c,g,s}``; raises OSError/CalledProcessError
    when that is not possible (the caller falls back to loopback)."""
    base = f"pe{tag}{os.getpid() % 100000}"
    c, g, s = f"{base}c", f"{base}g", f"{base}s"
    nets = Networks(c, g, s, "10.231.7.2", "10.231.7.1", "10.231.7.17", "10.231.7.18",
                    isolated=True, consumer_ip2="10.231.7.3")
    made: list[str] = []
    try:
        for ns in (c, g, s):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "set", "lo", "up", ns=ns)
        # veth pairs are created inside the gateway namespace and one end moved out, so no
        # interface ever appears in the host's namespace.
        _ip("link", "add", "front", "type", "veth", "peer", "name", "up0", ns=g)
        _ip("link", "set", "up0", "netns", c, ns=g)
        _ip("link", "add", "back", "type", "veth", "peer", "name", "up1", ns=g)
        _ip("link", "set", "up1", "netns", s, ns=g)
        for ns, dev, addr in ((g, "front", "10.231.7.1/28"), (c, "up0", "10.231.7.2/28"),
                              (g, "back", "10.231.7.17/28"), (s, "up1", "10.231.7.18/28")):
            _ip("addr", "add", addr, "dev", dev, ns=ns)
            _ip("link", "set", dev, "up", ns=ns)
        _ip("addr", "add", "10.231.7.3/28", "dev", "up0", ns=c)
        subprocess.run(["ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv4.ip_forward=0"],
                       check=True, capture_output=True, timeout=10)
    except BaseException:
        destroy_names(made)
        raise
    return nets


def destroy_names(names: list[str]) -> None:
    for ns in names:
        with contextlib.suppress(Exception):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def loopback() -> Networks:
    return Networks(None, None, None)


def mode() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


@contextlib.contextmanager
def networks(tag: str) -> Iterator[Networks]:
    """Namespaces if possible and not turned off (printed either way), always removed at the
    end; see ``PROPYLON_E2E_NETNS`` in the module's docstring."""
    chosen = mode()
    reason = f"turned off by {ENV}=off"
    nets: Networks | None = None
    if chosen != "off":
        try:
            nets = create(tag)
        except (OSError, subprocess.SubprocessError) as exc:
            if chosen == "on":
                raise RuntimeError(f"network namespaces required by {ENV}=on: {exc!r}") from exc
            reason = f"unavailable ({exc!r})"
    if nets is None:
        print(f"\n[e2e] network namespaces {reason}: FALLING BACK TO LOOPBACK")
        yield loopback()
        return
    print(f"\n[e2e] network namespaces {nets.namespaces} on 10.231.7.0/24")
    try:
        yield nets
    finally:
        destroy_names(nets.namespaces)
