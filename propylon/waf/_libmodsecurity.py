"""A ctypes binding to libmodsecurity v3's C API (Debian ``libmodsecurity3``).

Only what the ``waf`` policy uses: one engine per process (``msc_init``) with one text-log
callback, rule sets compiled from text (``msc_rules_add``), and transactions driven phase by
phase. There is no maintained Python binding; ctypes needs no compiler and no headers at run
time, and a ``CDLL`` call releases the GIL, so transactions can run on a thread pool while
the event loop goes on (docs/design.md, "WAF engine calls").

Invariants:
- a ``RuleSet`` is immutable once built and may be shared by transactions on any thread;
- a ``Transaction`` is used by one thread at a time (its owner serialises the calls) and
  freed exactly once (``close``);
- the log callback runs on the thread that drives the transaction; it gets the transaction's
  key (``msc_new_transaction``'s ``logCbData``) and appends the line to that transaction's
  list: lines never cross transactions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
import re
import threading
from collections.abc import Iterable

DEBIAN_PACKAGES = "libmodsecurity3 modsecurity-crs"
# PROPYLON_LIBMODSECURITY: the library's path, where it is not installed as Debian installs it
_SONAMES = ((os.environ["PROPYLON_LIBMODSECURITY"],) if os.environ.get("PROPYLON_LIBMODSECURITY")
            else ("libmodsecurity.so.3", "modsecurity"))


class LibraryMissing(RuntimeError):
    """libmodsecurity cannot be loaded on this machine."""


class RulesError(ValueError):
    """ModSecurity refused a rule set; the message is its parser's."""


class _Intervention(ctypes.Structure):
    # ModSecurityIntervention (modsecurity/intervention.h); url and log are malloc'ed by the
    # library and freed by the caller.
    _fields_ = (
        ("status", ctypes.c_int),
        ("pause", ctypes.c_int),
        ("url", ctypes.c_void_p),
        ("log", ctypes.c_void_p),
        ("disruptive", ctypes.c_int),
    )


_TEXT_ADDRESS = re.compile(r" ?File: 0x[0-9a-f]+")
_LOG_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
_P = ctypes.c_void_p
_S = ctypes.c_char_p
_N = ctypes.c_size_t
_I = ctypes.c_int
_PROTOTYPES: dict[str, tuple[object, tuple[object, ...]]] = {
    "msc_init": (_P, ()),
    "msc_who_am_i": (_S, (_P,)),
    "msc_set_connector_info": (None, (_P, _S)),
    "msc_set_log_cb": (None, (_P, _LOG_CB)),
    "msc_create_rules_set": (_P, ()),
    "msc_rules_add": (_I, (_P, _S, ctypes.POINTER(_P))),
    "msc_rules_cleanup": (_I, (_P,)),
    "msc_new_transaction": (_P, (_P, _P, _P)),
    "msc_process_connection": (_I, (_P, _S, _I, _S, _I)),
    "msc_process_uri": (_I, (_P, _S, _S, _S)),
    "msc_add_n_request_header": (_I, (_P, _S, _N, _S, _N)),
    "msc_process_request_headers": (_I, (_P,)),
    "msc_append_request_body": (_I, (_P, _S, _N)),
    "msc_process_request_body": (_I, (_P,)),
    "msc_add_n_response_header": (_I, (_P, _S, _N, _S, _N)),
    "msc_process_response_headers": (_I, (_P, _I, _S)),
    "msc_intervention": (_I, (_P, ctypes.POINTER(_Intervention))),
    "msc_transaction_cleanup": (None, (_P,)),
}


def _load() -> ctypes.CDLL:
    errors = []
    for name in _SONAMES:
        path = name if "." in name else ctypes.util.find_library(name)
        if not path:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            errors.append(str(exc))
            continue
        for fn, (restype, argtypes) in _PROTOTYPES.items():
            func = getattr(lib, fn)
            func.restype = restype
            func.argtypes = argtypes
        return lib
    detail = f" ({errors[0]})" if errors else ""
    raise LibraryMissing(
        f"the waf policy needs ModSecurity v3 and the OWASP CRS: install the Debian packages "
        f"{DEBIAN_PACKAGES} (apt-get install {DEBIAN_PACKAGES}){detail}")


_libc = ctypes.CDLL(None)
_libc.free.argtypes = (ctypes.c_void_p,)
_libc.free.restype = None


def _take_string(pointer: int | None) -> str:
    """A string the library malloc'ed, freed here."""
    if not pointer:
        return ""
    try:
        return ctypes.string_at(pointer).decode("utf-8", "replace")
    finally:
        _libc.free(pointer)


class Engine:
    """The process's ModSecurity instance and its log callback; see ``engine()``."""

    def __init__(self) -> None:
        self.lib = _load()
        self.handle = self.lib.msc_init()
        self.lib.msc_set_connector_info(self.handle, b"propylon")
        self._logs: dict[int, list[str]] = {}  # transaction key -> its text log lines
        self._keys = itertools.count(1)
        self._callback = _LOG_CB(self._on_log)  # kept: the library holds only the pointer
        self.lib.msc_set_log_cb(self.handle, self._callback)

    @property
    def version(self) -> str:
        return (self.lib.msc_who_am_i(self.handle) or b"").decode()

    def _on_log(self, key: int | None, line: bytes | None) -> None:
        lines = self._logs.get(key or 0)
        if lines is not None and line:
            lines.append(line.decode("utf-8", "replace"))

    def rule_set(self, parts: Iterable[tuple[str, str]]) -> RuleSet:
        return RuleSet(self, parts)

    def transaction(self, rules: RuleSet) -> Transaction:
        key = next(self._keys)
        lines: list[str] = []
        self._logs[key] = lines
        handle = self.lib.msc_new_transaction(self.handle, rules.handle, key)
        return Transaction(self, rules, handle, key, lines)

    def _forget(self, key: int) -> None:
        self._logs.pop(key, None)


_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine() -> Engine:
    """The process's engine, made on first use; raises ``LibraryMissing``."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = Engine()
        return _engine


class RuleSet:
    """Compiled rules: ``msc_create_rules_set``, then ``msc_rules_add`` for each part, given
    as ``(label, text)``; a refused part raises ``RulesError`` naming its label."""

    def __init__(self, owner: Engine, parts: Iterable[tuple[str, str]]) -> None:
        self.lib = owner.lib
        self.handle: int | None = self.lib.msc_create_rules_set()
        try:
            for label, text in parts:
                self._add(label, text)
        except RulesError:
            self.close()
            raise

    def _add(self, label: str, text: str) -> None:
        error = ctypes.c_void_p()
        if self.lib.msc_rules_add(self.handle, text.encode(), ctypes.byref(error)) < 0:
            reason = " ".join(_take_string(error.value).split()) or "refused"
            reason = _TEXT_ADDRESS.sub("", reason)  # where an added text lived in memory
            raise RulesError(f"{label}: {reason}")
        _take_string(error.value)

    def close(self) -> None:
        if self.handle:
            self.lib.msc_rules_cleanup(self.handle)
            self.handle = None

    def __del__(self) -> None:
        self.close()


class Intervention:
    """What the engine decided: ``status`` (e.g. 403) and its log line (the deciding rule)."""

    __slots__ = ("log", "status")

    def __init__(self, status: int, log: str) -> None:
        self.status = status
        self.log = log


class Transaction:
    """One request through the rules; every method blocks in C (call it off the loop)."""

    __slots__ = ("_key", "handle", "lib", "lines", "owner", "rules")

    def __init__(self, owner: Engine, rules: RuleSet, handle: int, key: int,
                 lines: list[str]) -> None:
        self.owner = owner
        self.lib = owner.lib
        self.rules = rules  # kept alive while the transaction uses it
        self.handle: int | None = handle
        self._key = key
        self.lines = lines  # text log lines of the rules that matched, in order

    def connection(self, client: str, client_port: int, server: str, server_port: int
                   ) -> None:
        self.lib.msc_process_connection(self.handle, client.encode(), client_port,
                                        server.encode(), server_port)

    def request_head(self, method: bytes, uri: bytes, version: bytes,
                     headers: Iterable[tuple[bytes, bytes]]) -> None:
        lib, handle = self.lib, self.handle
        lib.msc_process_uri(handle, uri, method, version)
        for name, value in headers:
            lib.msc_add_n_request_header(handle, name, len(name), value, len(value))
        lib.msc_process_request_headers(handle)

    def request_body(self, body: bytes) -> None:
        if body:
            self.lib.msc_append_request_body(self.handle, body, len(body))
        self.lib.msc_process_request_body(self.handle)

    def response_head(self, status: int, version: bytes,
                      headers: Iterable[tuple[bytes, bytes]]) -> None:
        lib, handle = self.lib, self.handle
        for name, value in headers:
            lib.msc_add_n_response_header(handle, name, len(name), value, len(value))
        lib.msc_process_response_headers(handle, status, b"HTTP/" + version)

    def intervention(self) -> Intervention | None:
        it = _Intervention(status=200)
        if not self.lib.msc_intervention(self.handle, ctypes.byref(it)):
            _take_string(it.url)
            _take_string(it.log)
            return None
        _take_string(it.url)
        return Intervention(it.status, _take_string(it.log))

    def close(self) -> None:
        if self.handle:
            self.lib.msc_transaction_cleanup(self.handle)
            self.handle = None
            self.owner._forget(self._key)
