"""Standalone mode's configuration flow: files -> resources -> IR, with every problem listed.

Invalid resources are contained, not refused (DESIGN §2, docs/operations.md "Invalid
resources"): a resource that fails validation is Invalid and replaced (a Route's matches
answer the Gateway's ``invalidRouteResponse``, a Gateway answers 503), every other resource
is served. What cannot be pinned to a resource (a YAML syntax error, a document of no known
kind or without a name) keeps its file as it last loaded in this process, every other file
served as written (``BuildResult.kept_back``); a file that never loaded (at start-up, or new)
refuses the whole configuration, as does an unreadable file or no Gateway left.

Policies are also built once here, as a proxy builds them (``contain_unbuildable``): one
that cannot be (a JWT key file missing, for instance) disables its Gateway when it is a
Gateway-level policy, or replaces its Route's or RouteTable's rules on that Gateway, instead
of refusing the whole configuration when the supervisor compiles it. So are the TLS client
contexts of Upstreams with files (a CA, a client certificate): one whose files cannot be
loaded is Invalid, and the Routes forwarding to it are replaced on that Gateway, as when it
does not exist.

A build also records the secrets translation resolved (``BuildResult.secrets``): which files
the configuration depends on, for whom, and their identity as they were read. ``FileSource``
(``propylon/file_source.py``) watches those files and reloads when one of them is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from propylon import ir
from propylon.config import ConfigError, Rejected, Resource, load_paths
from propylon.config.gatewayapi import ROUTE_OBJECT_KINDS
from propylon.filters.base import FilterEnv
from propylon.filters.factory import build_filter
from propylon.ir.jsontext import json_sorted
from propylon.net.tls import client_context
from propylon.runtime.check_memo import upstreams_of, vouch
from propylon.runtime.gc_pause import gc_paused
from propylon.translate import translate_with_issues
from propylon.translate.consumers import (
    FileStamp,
    SecretRead,
    file_stamp,
    recording_secret_reads,
)
from propylon.translate.containment import disabled_gateway

log = logging.getLogger("propylon")


@dataclass
class BuildResult:
    snapshot: ir.SnapshotIR | None
    errors: list[str] = field(default_factory=list)  # the configuration is refused
    # it runs, with these resources replaced: each located error (file:line:column: ...),
    # then each Invalid resource's status
    warnings: list[str] = field(default_factory=list)
    # every secret resolved by translation; None when the build stopped before translating
    secrets: tuple[SecretRead, ...] | None = None
    # translation's findings with file:line (``severity`` "error": behind an invalid resource
    # of ``warnings``; "warning": the configuration runs as written, e.g. a shadowed rule)
    issues: tuple[ConfigError, ...] = ()
    # the errors naming no resource of each file read as it was last loaded instead (a YAML
    # syntax error...): the files are not served as written, though the rest is
    kept_back: list[str] = field(default_factory=list)


# A first build of at least this many Routes and RouteTables sends parts of the Routes to be
# compiled first (``preview``), growing: each part is the first of these shares of them in key
# order (the order of a Gateway's rules), so each part, and the whole, is the one before with
# rules appended. The workers compile a part while the next is translated; the last part
# compiled is what they still have to compile once the whole is translated.
PREVIEW_MIN_ROUTES = 2000
PREVIEW_SHARES = (0.35, 0.7)
# what the parts are shares of: Routes, and the route objects of the Kubernetes input (a
# part converts its own; the next part's conversion replays theirs)
_PREVIEWED = frozenset({"Route", *ROUTE_OBJECT_KINDS})


def build_snapshot(paths: Sequence[str | Path], *, parallel: bool = False,
                   read: Callable[[], None] | None = None,
                   preview: Callable[[ir.SnapshotIR], None] | None = None,
                   sealed: bool = True) -> BuildResult:
    """Load and translate ``paths``, containing invalid resources (see the module doc): they
    are replaced and reported as warnings, like the control plane's statuses. A file with
    an error that names no resource is read as it last loaded (``kept_back``), or refuses
    the whole set if it never did. ``parallel``: parse on every core
    (``load_paths``); ``read`` is called once the files are read, whatever came of it.
    ``preview``: given, when the configuration is large and valid, the snapshots of growing
    parts of it (``PREVIEW_SHARES`` of the Routes and Kubernetes route objects in key
    order), each before the next is translated (the translation of the Routes of one is
    reused in the next): the gateway's workers compile each meanwhile. ``sealed`` False:
    the snapshot's version is left empty (for a command that does not show it)."""
    try:
        loaded = load_paths(paths, parallel=parallel, keep_last_loaded=True)
    except OSError as exc:
        return BuildResult(None, [f"cannot read configuration: {exc}"])
    finally:
        if read is not None:
            read()
    unattributed = loaded.unattributed
    if unattributed:
        return BuildResult(None, [str(e) for e in unattributed])
    if preview is not None and not loaded.errors and not loaded.rejected:
        _send_preview(loaded.resources, preview)
    result = build_from_resources(loaded.resources, loaded.rejected, sealed=sealed)
    if loaded.kept_back:
        result.kept_back = [f"{error} (the file is served as it was last loaded)"
                            for error in loaded.kept_back]
        result.warnings[:0] = result.kept_back
    return result


def _send_preview(resources: Sequence[Resource],
                  preview: Callable[[ir.SnapshotIR], None]) -> None:
    """Each part's snapshot to ``preview``, if there are parts to send: what is served never
    depends on them (a failure here only leaves the workers compiling the rest)."""
    routes = sorted((r.key, id(r)) for r in resources if r.kind in _PREVIEWED)
    if len(routes) < 2 or len(routes) + sum(
            r.kind == "RouteTable" for r in resources) < PREVIEW_MIN_ROUTES:
        return
    for share in PREVIEW_SHARES:
        later = {ident for _, ident in routes[int(len(routes) * share):]}
        part = [r for r in resources if id(r) not in later]
        try:
            result = build_from_resources(part)
            # a part's warnings are no reason to stop: a Policy targeting a later Route is
            # not found in it, and whatever else a part reports the whole reports too
            if result.snapshot is None:
                return
            preview(result.snapshot)
        except Exception:
            log.exception("a first part of the configuration could not be sent ahead")
            return


def build_from_resources(
    resources: Sequence[Resource], rejected: Sequence[Rejected] = (), *, sealed: bool = True
) -> BuildResult:
    """Translate valid resources, containing the ``rejected`` ones; invalid resources become
    warnings, no Gateway an error. ``sealed`` False: the snapshot's version is left empty
    (``ir.seal`` gives it), for a caller that has something else to do meanwhile."""
    with gc_paused():
        return _build_from_resources(resources, rejected, sealed)


def _build_from_resources(
    resources: Sequence[Resource], rejected: Sequence[Rejected], sealed: bool
) -> BuildResult:
    with recording_secret_reads() as reads:
        translation = translate_with_issues(resources, rejected, sealed=sealed)
    sources = {r.ref: r for r in resources}
    snapshot, issues = contain_unbuildable(
        translation.snapshot, translation.issues, sources, sealed=sealed)
    secrets = tuple(dict.fromkeys(reads))  # a header secret is resolved once per rule
    warnings = [str(issue) for issue in issues if issue.severity == "error"]
    warnings += [
        f"{s.kind} {s.key}: {s.state}: {'; '.join(s.reasons)}"
        for s in snapshot.statuses
        if s.state != "Accepted"
    ]
    if not snapshot.gateways:
        return BuildResult(None, ["no Gateway resource found: nothing to serve"], warnings,
                           secrets, issues)
    return BuildResult(snapshot, [], warnings, secrets, issues)


# -- policies and Upstreams that cannot be built: contained like invalid resources ----------
def contain_unbuildable(
    snapshot: ir.SnapshotIR, issues: Sequence[ConfigError], resources: Mapping[str, Resource],
    *, sealed: bool = True,
) -> tuple[ir.SnapshotIR, tuple[ConfigError, ...]]:
    """Build every policy of ``snapshot`` once, and the TLS context of every Upstream with
    files; a Gateway whose Gateway-level policy cannot be built is disabled, a resource whose
    rule policy cannot be, or that forwards to an Upstream whose context cannot be, is
    replaced on that Gateway (and the Upstream is Invalid). The snapshot (resealed if
    ``sealed``) and the issues, with one more per failure, at the resource."""
    failures: dict[tuple[str, str], str] = {}  # (ref, gateway) -> reason
    with _scratch_env() as env:
        check, tls = _PolicyCheck(env), _TlsCheck()
        gateways = tuple(_contain_gateway(g, check, tls, failures) for g in snapshot.gateways)
        check.keep()
        tls.keep()
    if not failures:
        return snapshot, tuple(issues)
    statuses = tuple(_failed_status(s, failures) for s in snapshot.statuses)
    located = [_issue(ref, reason, resources) for (ref, _), reason in failures.items()]
    contained = dataclasses.replace(snapshot, gateways=gateways, statuses=statuses)
    if sealed:
        contained = ir.seal(contained)
    return contained, (*issues, *located)


def _contain_gateway(
    gateway: ir.GatewayIR, check: _PolicyCheck, tls: _TlsCheck,
    failures: dict[tuple[str, str], str],
) -> ir.GatewayIR:
    error = check.first_error(gateway.default_policies)
    if error is not None:
        failures[(f"Gateway {gateway.key}", gateway.key)] = (
            f"{error}: the Gateway is disabled (its listeners answer 503) until it is fixed")
        return disabled_gateway(gateway.key, gateway.listeners)
    unusable = {u.key: error for u in gateway.upstreams if (error := tls.error(u)) is not None}
    for key, error in unusable.items():
        failures[(f"Upstream {key}", gateway.key)] = (
            f"{error}: the Routes forwarding to it answer the invalid route response on "
            f"Gateway {gateway.key} until it is fixed")
    broken: set[str] = set()
    for rule in gateway.rules:
        if rule.route in broken:
            continue
        error = check.first_error(rule.policies)
        if error is None and unusable:
            gone = next((key for key in upstreams_of(rule) if key in unusable), None)
            if gone is not None:
                error = f"it forwards to Upstream {gone}, whose TLS files cannot be loaded"
        if error is not None:
            broken.add(rule.route)
            failures[(rule.route, gateway.key)] = (
                f"{error}: its rules answer the invalid route response on Gateway "
                f"{gateway.key} until it is fixed")
    if not broken and not unusable:
        return gateway
    rules = tuple(_replaced(r, gateway) if r.route in broken else r for r in gateway.rules)
    used = {b.upstream for r in rules if isinstance(r.action, ir.ForwardIR)
            for b in r.action.backends} | {r.action.mirror.upstream for r in rules
                                           if isinstance(r.action, ir.ForwardIR)
                                           and r.action.mirror is not None}
    upstreams = tuple(u for u in gateway.upstreams if u.key in used)
    return dataclasses.replace(gateway, rules=rules, upstreams=upstreams)


# The last build's TLS checks (``_TlsCheck``), by spec, protocol and files' identities.
_LAST_TLS: list[dict[tuple[Any, ...], str | None]] = [{}]


class _TlsCheck:
    """Builds the TLS client context of each Upstream with files (a CA, a client
    certificate) as a proxy's compilation does (``net.tls.client_context``), each distinct
    one once, and again in a later build only when one of its files changed: the error a
    proxy would refuse it with, or None."""

    def __init__(self) -> None:
        self.last = _LAST_TLS[0]
        self.kept: dict[tuple[Any, ...], str | None] = {}

    def error(self, upstream: ir.UpstreamIR) -> str | None:
        spec = upstream.tls
        if spec is None or not (spec.ca_file or spec.cert_file or spec.key_file):
            return None  # the system's CAs: nothing of the configuration's to load
        http2 = upstream.protocol == "HTTP2"
        files = tuple(file_stamp(path) if path else None
                      for path in (spec.ca_file, spec.cert_file, spec.key_file))
        key = (spec, http2, files)
        if key in self.kept:
            return self.kept[key]
        if key in self.last:
            error = self.last[key]
        else:
            try:
                client_context(spec, http2)
                error = None
            except ValueError as exc:
                error = str(exc)
        self.kept[key] = error
        return error

    def keep(self) -> None:
        _LAST_TLS[0] = self.kept


def _replaced(rule: ir.RuleIR, gateway: ir.GatewayIR) -> ir.RuleIR:
    return dataclasses.replace(rule, action=gateway.invalid_route_response, policies=(),
                               replaced=True)


# Policy types whose building reads nothing but the spec (no file, no network): a check of
# one is kept for the next build, by object, and a rule translation leaves unchanged keeps
# its policy objects (``translate/memo.py``). Other types are built again by every check.
_SPEC_ONLY_TYPES = frozenset({"headers", "cors", "ipFilter", "requestLimits", "faultInjection"})
_LAST_CHECKS: list[dict[int, tuple[ir.PolicyIR, str | None]]] = [{}]


class _PolicyCheck:
    """Builds policies as a proxy would, each distinct one once (a Gateway-level policy is
    on every rule): the error a proxy's compilation would refuse it with, or None."""

    def __init__(self, env: FilterEnv) -> None:
        self.env = env
        self.errors: dict[tuple[str, str, str], str | None] = {}
        # the spec-only policies built without error, by type and spec: building one reads
        # only its spec (its source is a label), so it builds from any other source too
        self.built: set[tuple[str, str]] = set()
        self.last = _LAST_CHECKS[0]
        self.kept: dict[int, tuple[ir.PolicyIR, str | None]] = {}
        self.texts: dict[int, tuple[dict[str, Any], str]] = {}  # by id of a spec

    def first_error(self, policies: Iterable[ir.PolicyIR]) -> str | None:
        for policy in policies:
            error = self._checked(policy)
            if error is not None:
                return error
        return None

    def keep(self) -> None:
        """The checks of this build are those the next one may reuse, and the supervisor's
        check of its snapshot need not build again (``runtime/check_memo.py``)."""
        _LAST_CHECKS[0] = self.kept
        vouch(policy for policy, error in self.kept.values() if error is None)

    def _checked(self, policy: ir.PolicyIR) -> str | None:
        last = self.last.get(id(policy))
        if last is not None and last[0] is policy:
            error = last[1]
        else:
            spec = self._text(policy.spec)
            spec_only = policy.type in _SPEC_ONLY_TYPES
            if spec_only and (policy.type, spec) in self.built:
                error = None
            else:
                key = (policy.type, policy.source, spec)
                if key not in self.errors:
                    self.errors[key] = self._error(policy)
                error = self.errors[key]
                if spec_only and error is None:
                    self.built.add((policy.type, spec))
        if policy.type in _SPEC_ONLY_TYPES:
            self.kept[id(policy)] = (policy, error)
        return error

    def _text(self, spec: dict[str, Any]) -> str:
        """``spec`` as text, made once for a spec many rules share (``policies._specs``)."""
        known = self.texts.get(id(spec))
        if known is not None and known[0] is spec:
            return known[1]
        text = _spec_text(spec)
        self.texts[id(spec)] = (spec, text)
        return text

    def _error(self, policy: ir.PolicyIR) -> str | None:
        try:
            build_filter(policy, self.env)
        except Exception as exc:  # what the supervisor's compilation would refuse
            text = str(exc) or type(exc).__name__
            return text if text.startswith(policy.source) else (
                f"{policy.source}: {policy.type}: {text}")
        return None


def _spec_text(spec: object) -> str:
    try:
        return json_sorted(spec)
    except (TypeError, ValueError):  # not plain JSON data: a key all the same
        return json.dumps(spec, sort_keys=True, default=str)


@contextlib.contextmanager
def _scratch_env() -> Iterator[FilterEnv]:
    """A filter environment on the running loop, or on a loop made (and closed) for it."""
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    loop = running or asyncio.new_event_loop()
    try:
        yield FilterEnv(loop)
    finally:
        if running is None:
            loop.close()


def _failed_status(status: ir.StatusIR, failures: Mapping[tuple[str, str], str]) -> ir.StatusIR:
    ref = f"{status.kind} {status.key}"
    reasons = [reason for (failed, _), reason in failures.items() if failed == ref]
    if not reasons:
        return status
    return dataclasses.replace(status, state="Invalid",
                               reasons=tuple(dict.fromkeys((*status.reasons, *reasons))))


def _issue(ref: str, reason: str, resources: Mapping[str, Resource]) -> ConfigError:
    kind, _, key = ref.partition(" ")
    resource = resources.get(ref)
    source = resource.source if resource is not None else None
    line, column = (source.line, source.column) if source is not None and source.line else (
        None, None)
    return ConfigError(source.file if source else "", line, kind, key, None, reason,
                       column=column)


# -- secrets: what to watch, what changed, what failed ---------------------------------------
def secret_stamps(reads: Iterable[SecretRead]) -> dict[str, FileStamp | None]:
    """Each secret file read, with its identity when it was read (None: it was missing)."""
    return {r.path: r.stamp for r in reads if r.path is not None}


def changed_secret_files(stamps: Mapping[str, FileStamp | None]) -> list[str]:
    """The files of ``stamps`` that are not, now, the file that was read (rewritten, replaced,
    deleted or created)."""
    return sorted(path for path, stamp in stamps.items() if file_stamp(path) != stamp)


def secret_watch_dirs(paths: Iterable[str]) -> tuple[str, ...]:
    """The folders to watch (not recursively) to see every change of the files ``paths``.

    A file is watched through its folder, since a file replaced by a rename, or reached
    through a symlink swapped atomically (Kubernetes' ``..data``), is a new file: the folder
    of the path as written and the folder of the file it resolves to now. A folder that does
    not exist is watched through its nearest existing parent."""
    dirs: set[str] = set()
    for path in paths:
        for candidate in (os.path.dirname(path), os.path.dirname(os.path.realpath(path))):
            dirs.add(_existing_dir(candidate))
    return tuple(sorted(dirs))


def _existing_dir(path: str) -> str:
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def secret_failures(reads: Iterable[SecretRead]) -> dict[tuple[str, str], str]:
    """(resource, reference) -> message, for every secret that could not be used."""
    return {
        (r.needed_by, r.reference): f"{r.reference} needed by {r.needed_by or 'the configuration'}"
                                    f": {r.error}"
        for r in reads
        if r.error is not None
    }
