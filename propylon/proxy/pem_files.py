"""Private files for a certificate given inline (PEM in the IR): Python's ``ssl`` loads a
certificate chain and its key from files only.

``pem_files`` writes a chain and its key into a new directory only this process's user can
enter (``tempfile.mkdtemp``: mode 0700, under ``$TMPDIR``), each file created exclusively
with mode 0600 (never through a file or link someone else made) and named by a hash of its
content. The directory is removed as soon as the caller has loaded them: the key is on disk
for the time of one ``load_cert_chain``, and a changed Secret is a new IR version, hence new
contexts, so nothing has to watch these files. Nothing here logs the PEM or puts it in a
message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


@contextlib.contextmanager
def pem_files(certificate_pem: str, private_key: str,
              base: str | None = None) -> Iterator[tuple[str, str]]:
    """(certificate file, key file) holding the PEM given, removed on leaving."""
    directory = tempfile.mkdtemp(prefix="propylon-tls-", dir=base)
    try:
        yield _write(directory, "crt", certificate_pem), _write(directory, "key", private_key)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _write(directory: str, suffix: str, text: str) -> str:
    data = text.encode()
    path = os.path.join(directory, f"{hashlib.sha256(data).hexdigest()[:16]}.{suffix}")
    fd = os.open(path, _FLAGS, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return path
