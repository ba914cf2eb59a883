"""Consumers: read each credential's ``secretRef`` once, at translation, and keep only hashes.

A secret is read from a file (a relative path is taken from the directory of the file that
defined the Consumer) or an environment variable, stripped of surrounding whitespace. API keys
become SHA-256 hex digests (keys are long random strings, so a fast hash is enough and a lookup
is one dict access); basic-auth passwords become PBKDF2-HMAC-SHA256 with a salt derived from
the consumer and user name, so that translation stays deterministic (equal inputs, equal
version). A Consumer whose secret cannot be read is Invalid and left out; the reason names the
reference, never the secret. Two consumers with one API key: both are Invalid for that key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from propylon.config import Consumer, Resource
from propylon.config.consumer import SecretRef
from propylon.ir.model import BasicUserIR, ConsumerIR
from propylon.translate.status import StatusBook

PBKDF2_ITERATIONS = 20_000


class SecretError(Exception):
    """A secret reference that could not be read; the message never contains the secret."""


def read_secret(ref: SecretRef, base_dir: str | None) -> str:
    if ref.env is not None:
        value = os.environ.get(ref.env)
        if value is None:
            raise SecretError(f"environment variable {ref.env} is not set")
        return value.strip()
    assert ref.file is not None
    path = ref.file if os.path.isabs(ref.file) or base_dir is None else os.path.join(
        base_dir, ref.file)
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {ref.file}: {exc.strerror}") from None


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
    return _without_shared_keys(built, status)


def _translate_one(consumer: Consumer, status: StatusBook) -> ConsumerIR | None:
    source = consumer.source
    base_dir = os.path.dirname(os.path.abspath(source.file)) if source is not None else None
    creds = consumer.spec.credentials
    keys: list[str] = []
    users: list[BasicUserIR] = []
    failed = False
    for i, cred in enumerate(creds.api_keys):
        try:
            keys.append(hash_api_key(read_secret(cred.secret_ref, base_dir)))
        except SecretError as exc:
            status.fail(consumer.kind, consumer.key, f"spec.credentials.apiKeys[{i}]: {exc}")
            failed = True
    for i, user in enumerate(creds.basic_auth):
        try:
            password = read_secret(user.secret_ref, base_dir)
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
    """An API key held by two consumers identifies neither: both lose it (and are told)."""
    owners: dict[str, list[str]] = {}
    for c in consumers:
        for k in c.api_keys:
            owners.setdefault(k, []).append(c.key)
    shared = {k for k, who in owners.items() if len(who) > 1}
    out: list[ConsumerIR] = []
    for c in consumers:
        mine = [k for k in c.api_keys if k in shared]
        if mine:
            others = sorted({o for k in mine for o in owners[k]} - {c.key})
            status.fail("Consumer", c.key, f"an API key is also used by Consumer {others[0]}")
            continue
        out.append(c)
    return tuple(out)
