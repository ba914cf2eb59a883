"""Consumers: read each credential's ``secretRef`` once, at translation, and keep only hashes.

A secret is read from a file (a relative path is taken from the directory of the file that
defined the Consumer) or an environment variable, stripped of surrounding whitespace. API keys
become SHA-256 hex digests (keys are long random strings, so a fast hash is enough and a lookup
is one dict access); basic-auth passwords become PBKDF2-HMAC-SHA256 with a salt derived from
the consumer and user name, so that translation stays deterministic (equal inputs, equal
version). A Consumer whose secret cannot be read is Invalid and left out; the reason names the
reference, never the secret. Two consumers with one API key: both are Invalid for that key;
the same for two consumers with one basic-auth username.

The auth policies' ``consumers`` restrictions name Consumers; a name that matches no Consumer
(a typo, a deleted Consumer), a bare name that matches Consumers in several namespaces, and
``allowLabels`` that no Consumer carries are warnings on the resource that holds the policy,
located at the entry (``propylon validate`` prints them with ``file:line``); the resource stays
Accepted: the restriction still does what it says, it probably is not what was meant.

Every read (and failed read) can be recorded: ``recording_secret_reads`` collects one
``SecretRead`` per reference resolved while it is active, with the file's identity as it was
read. Standalone mode uses that record to watch exactly the secret files the configuration
it loaded depends on (``propylon/standalone.py``), without parsing the configuration twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from propylon.config import Consumer, Gateway, Policy, Resource, Route, RouteTable
from propylon.config.consumer import SecretRef
from propylon.config.policy import PolicySections
from propylon.ir.model import BasicUserIR, ConsumerIR
from propylon.policies.auth import ApiKeyPolicy, BasicAuthPolicy, ConsumerRestriction
from propylon.translate.status import StatusBook

PBKDF2_ITERATIONS = 20_000


class SecretError(Exception):
    """A secret reference that could not be read; the message never contains the secret."""


# What identifies a file's content without reading it: device, inode, size, mtime, ctime.
FileStamp = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class SecretRead:
    """One resolution of a ``secretRef``: where from, for whom, and how it went."""

    needed_by: str  # the resource (and field) that needs it, e.g. "Consumer default/a apiKeys[0]"
    path: str | None  # the absolute file path; None for an environment variable
    env: str | None  # the variable's name; None for a file
    stamp: FileStamp | None  # the file's identity when read (None: missing, or not a file)
    error: str | None  # why it could not be used; None when it could

    @property
    def reference(self) -> str:
        if self.path is not None:
            return f"secret file {self.path}"
        return f"environment variable {self.env}"


_reads: ContextVar[list[SecretRead] | None] = ContextVar("propylon_secret_reads", default=None)


@contextlib.contextmanager
def recording_secret_reads() -> Iterator[list[SecretRead]]:
    """Collect a ``SecretRead`` for every secret resolved inside the ``with`` block."""
    reads: list[SecretRead] = []
    token = _reads.set(reads)
    try:
        yield reads
    finally:
        _reads.reset(token)


def file_stamp(path: str) -> FileStamp | None:
    """The identity of the file at ``path`` (symlinks followed) now; None if there is none."""
    try:
        return _stamp(os.stat(path))
    except OSError:
        return None


def _stamp(st: os.stat_result) -> FileStamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_secret(ref: SecretRef, base_dir: str | None, *, needed_by: str = "") -> str:
    """The secret ``ref`` points to, stripped; ``SecretError`` if it cannot be read or a file
    holds nothing (an empty API key or password is never meant, e.g. a file being rewritten)."""
    if ref.env is not None:
        value = os.environ.get(ref.env)
        error = None if value is not None else f"environment variable {ref.env} is not set"
        _record(SecretRead(needed_by, None, ref.env, None, error))
        if value is None:
            raise SecretError(f"environment variable {ref.env} is not set")
        return value.strip()
    assert ref.file is not None
    path = ref.file if os.path.isabs(ref.file) or base_dir is None else os.path.join(
        base_dir, ref.file)
    absolute = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            stamp = _stamp(os.fstat(handle.fileno()))
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        message = f"cannot read secret file {ref.file}: {reason}"
        _record(SecretRead(needed_by, absolute, None, file_stamp(path), message))
        raise SecretError(message) from None
    if not value:
        message = f"secret file {ref.file} is empty"
        _record(SecretRead(needed_by, absolute, None, stamp, message))
        raise SecretError(message)
    _record(SecretRead(needed_by, absolute, None, stamp, None))
    return value


def secret_reads_made() -> int:
    """How many secrets were resolved so far, in this process (each one read or failed)."""
    return _READS_MADE[0]


_READS_MADE = [0]


def _record(read: SecretRead) -> None:
    _READS_MADE[0] += 1
    reads = _reads.get()
    if reads is not None:
        reads.append(read)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations).hex()


def translate_consumers(
    resources: Sequence[Resource], status: StatusBook
) -> tuple[ConsumerIR, ...]:
    consumers = sorted((r for r in resources if isinstance(r, Consumer)), key=lambda c: c.key)
    built: list[ConsumerIR] = []
    for consumer in consumers:
        status.track(consumer)
        entry = _translate_one(consumer, status)
        if entry is not None:
            built.append(entry)
    check_consumer_restrictions(resources, consumers, status)
    return _without_shared_keys(built, status)


def check_consumer_restrictions(
    resources: Sequence[Resource], consumers: Sequence[Consumer], status: StatusBook
) -> None:
    """Report restriction entries that name no Consumer, or several (see the module doc)."""
    global _FOUND
    keys = {c.key: {**c.metadata.labels, **c.spec.labels} for c in consumers}
    known, found = _FOUND, {}
    sections: dict[int, tuple[PolicySections, _Sections]] = {}
    for resource in resources:
        entry = known.get(id(resource))
        if entry is None or entry[0] is not resource:
            entry = (resource, _restrictions(resource, sections))
        found[id(resource)] = entry
        for field, restriction in entry[1]:
            for problem_field, message in _restriction_problems(field, restriction, keys):
                status.warn(resource.kind, resource.key, message, field=problem_field)
    _FOUND = found


# The restriction sections of the resources of the last check, by object (each entry keeps its
# resource, so an id is never another object's; the loader gives unchanged resources as the
# same objects): a reload of 10,000 Routes looked through every rule's policies again.
_FOUND: dict[int, tuple[Resource, list[tuple[str, ConsumerRestriction]]]] = {}


# the (alias, restriction) of a policy item's ``apiKey``/``basicAuth`` sections with one
_Sections = tuple[tuple[str, ConsumerRestriction], ...]


def _restrictions(resource: Resource, sections: dict[int, tuple[PolicySections, _Sections]]
                  ) -> list[tuple[str, ConsumerRestriction]]:
    """(field path, restriction) of every ``apiKey``/``basicAuth`` ``consumers`` section.
    ``sections``: what each policy item has, by object, for this check (the loader shares
    equal items: the 10,000 Routes of one policy are looked at once, not 10,000 times)."""
    kind = resource.kind  # first: ``isinstance`` of the models is an ABC's check, slower
    if kind == "Gateway" and isinstance(resource, Gateway):
        return [(f"spec.policies[{i}].{alias}.consumers", restriction)
                for i, item in enumerate(resource.spec.policies)
                for alias, restriction in _item_sections(item, sections)]
    if kind in ("Route", "RouteTable") and isinstance(resource, Route | RouteTable):
        found = []
        for i, rule in enumerate(resource.spec.rules):
            if rule.policies:
                for j, item in enumerate(rule.policies):
                    for alias, restriction in _item_sections(item, sections):
                        found.append(
                            (f"spec.rules[{i}].policies[{j}].{alias}.consumers", restriction))
        return found
    if kind == "Policy" and isinstance(resource, Policy):
        return [(f"spec.{alias}.consumers", restriction)
                for alias, restriction in _item_sections(resource.spec, sections)]
    return []


def _item_sections(item: PolicySections, sections: dict[int, tuple[PolicySections, _Sections]]
                   ) -> _Sections:
    entry = sections.get(id(item))
    if entry is None or entry[0] is not item:
        found = []
        for alias in ("apiKey", "basicAuth"):
            section = item.section(alias)
            if isinstance(section, ApiKeyPolicy | BasicAuthPolicy) \
                    and section.consumers is not None:
                found.append((alias, section.consumers))
        entry = sections[id(item)] = (item, tuple(found))
    return entry[1]


def _restriction_problems(
    field: str, restriction: ConsumerRestriction, labels_of: dict[str, dict[str, str]]
) -> list[tuple[str, str]]:
    problems = []
    for name, refs in (("allow", restriction.allow), ("deny", restriction.deny)):
        for i, ref in enumerate(refs or ()):
            message = _ref_problem(ref, labels_of)
            if message:
                problems.append((f"{field}.{name}[{i}]", message))
    wanted = restriction.allow_labels
    if wanted and not any(all(labels.get(k) in v for k, v in wanted.items())
                          for labels in labels_of.values()):
        problems.append((f"{field}.allowLabels", "no Consumer has these labels"))
    return problems


def _ref_problem(ref: str, labels_of: dict[str, dict[str, str]]) -> str | None:
    if "/" in ref:
        return None if ref in labels_of else f"no Consumer {ref}"
    matches = sorted(k for k in labels_of if k.rpartition("/")[2] == ref)
    if not matches:
        return f'no Consumer named "{ref}"'
    if len(matches) > 1:
        return (f'"{ref}" matches Consumers {", ".join(matches)}; write namespace/name to '
                "pick one")
    return None


def _translate_one(consumer: Consumer, status: StatusBook) -> ConsumerIR | None:
    source = consumer.source
    base_dir = os.path.dirname(os.path.abspath(source.file)) if source is not None else None
    creds = consumer.spec.credentials
    keys: list[str] = []
    users: list[BasicUserIR] = []
    failed = False
    for i, cred in enumerate(creds.api_keys):
        try:
            keys.append(hash_api_key(read_secret(
                cred.secret_ref, base_dir,
                needed_by=f"{consumer.ref} spec.credentials.apiKeys[{i}]")))
        except SecretError as exc:
            status.fail(consumer.kind, consumer.key, f"spec.credentials.apiKeys[{i}]: {exc}")
            failed = True
    for i, user in enumerate(creds.basic_auth):
        try:
            password = read_secret(
                user.secret_ref, base_dir,
                needed_by=f"{consumer.ref} spec.credentials.basicAuth[{i}]")
        except SecretError as exc:
            status.fail(consumer.kind, consumer.key, f"spec.credentials.basicAuth[{i}]: {exc}")
            failed = True
            continue
        salt = hashlib.sha256(f"{consumer.key}\0{user.username}".encode()).digest()[:16]
        users.append(
            BasicUserIR(user.username, salt.hex(), hash_password(password, salt),
                        PBKDF2_ITERATIONS)
        )
    if failed:
        return None
    return ConsumerIR(
        key=consumer.key,
        name=consumer.name,
        labels=dict(sorted(consumer.metadata.labels.items())) | dict(
            sorted(consumer.spec.labels.items())),
        api_keys=tuple(sorted(set(keys))),
        basic_auth=tuple(users),
    )


def _without_shared_keys(
    consumers: list[ConsumerIR], status: StatusBook
) -> tuple[ConsumerIR, ...]:
    """An API key held by two consumers identifies neither: both lose it (and are told).
    So does a basic-auth username: the proxy looks a user up by name, so of two consumers
    with one username the first (by key) took it and the other's user silently never
    authenticated."""
    owners: dict[str, list[str]] = {}
    users: dict[str, set[str]] = {}
    for c in consumers:
        for k in c.api_keys:
            owners.setdefault(k, []).append(c.key)
        for user in c.basic_auth:
            users.setdefault(user.username, set()).add(c.key)
    shared = {k for k, who in owners.items() if len(who) > 1}
    out: list[ConsumerIR] = []
    for c in consumers:
        mine = [k for k in c.api_keys if k in shared]
        if mine:
            others = sorted({o for k in mine for o in owners[k]} - {c.key})
            status.fail("Consumer", c.key, f"an API key is also used by Consumer {others[0]}")
            continue
        names = sorted(u.username for u in c.basic_auth if len(users[u.username]) > 1)
        if names:
            others = sorted(users[names[0]] - {c.key})
            status.fail("Consumer", c.key,
                        f'basic-auth username "{names[0]}" is also used by Consumer {others[0]}')
            continue
        out.append(c)
    return tuple(out)
