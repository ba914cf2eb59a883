"""The supervisor's listening sockets: bound once, lent to workers, handed to a successor.

Invariants:
- A listening socket is owned by the supervisor for as long as some configuration listens on
  its address and port. Workers get a copy of the descriptor (SCM_RIGHTS over their pipe) and
  closing that copy (a drain, a listener removed) never closes the socket itself.
- Each (address, port) has one socket per worker slot, bound with SO_REUSEPORT as before
  (the kernel spreads connections over the slots); worker ``i`` and its replacements, in this
  process or in the next binary, accept on slot ``i``. Connections queued in a slot's backlog
  are therefore never reset by a worker exiting or by a binary upgrade: with SO_REUSEPORT each
  socket has its own backlog and closing it would drop what waits there.
- Sockets come from three places: bound here; inherited from the previous binary on SIGUSR2
  (``PROPYLON_INHERITED_FDS``, a JSON list of ``[fd, address, port]``, in slot order);
  or passed by systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``, matched by the
  address and port they are bound to, one socket shared by every worker).
- Inherited sockets that no configuration claims are closed after the first install.
- The supervisor takes a socket back from every worker before closing it, and a worker
  accepts only on the socket lent to it now (``Worker.lend``): a worker's copy of a closed
  socket would keep it listening, beside the one bound again for the same port, with a
  backlog nobody accepts from. So after any sequence of installs (refused, timed out and
  finished late, retried) and worker replacements, once each worker has handled what it was
  sent, the listening sockets are the served configuration's and each is accepted on by
  the worker of its slot.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping

log = logging.getLogger("propylon")

INHERITED_ENV = "PROPYLON_INHERITED_FDS"
_SD_LISTEN_FDS_START = 3
BACKLOG = 2048

Key = tuple[str, int]


def bind_listening(address: str, port: int, *, reuse_port: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _bound_key(sock: socket.socket) -> Key:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


class ListeningSockets:
    """Listening sockets by (address, port), one per worker slot (or one shared by all)."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = max(1, slots)
        self.by_key: dict[Key, list[socket.socket]] = {}
        self.inherited: set[Key] = set()  # not yet claimed by a configuration
        self.admin: socket.socket | None = None

    # -- where sockets come from ---------------------------------------------------------
    def adopt_environment(self, environ: Mapping[str, str] | None = None) -> None:
        """Take the sockets a previous binary or systemd passed; their variables are removed
        so the processes this one starts do not see them."""
        env = os.environ if environ is None else environ
        for fd, key in _inherited_fds(env) + _systemd_fds(env):
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
            sock.setblocking(False)
            self.by_key.setdefault(key, []).append(sock)
            self.inherited.add(key)
        if environ is None:
            for name in (INHERITED_ENV, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
                os.environ.pop(name, None)

    def admin_socket(self, address: str, port: int) -> socket.socket:
        """The admin listener's socket: an inherited one on that address, else bound now
        (without SO_REUSEPORT: a second process on the admin port is a mistake)."""
        found = self.by_key.pop((address, port), None)
        self.inherited.discard((address, port))
        if found:
            for extra in found[1:]:
                extra.close()
            self.admin = found[0]
        else:
            self.admin = bind_listening(address, port, reuse_port=False)
        return self.admin

    def ensure(self, keys: Iterable[Key]) -> None:
        """Bind every key that has no socket yet; on failure nothing new stays bound."""
        bound: list[Key] = []
        try:
            for key in keys:
                if key in self.by_key:
                    continue
                self.by_key[key] = []
                bound.append(key)
                for _ in range(self.slots):
                    self.by_key[key].append(bind_listening(*key))
        except OSError as exc:
            for key in bound:
                for sock in self.by_key.pop(key):
                    sock.close()
            raise OSError(exc.errno, f"cannot listen on {key[0]}:{key[1]}: "
                          f"{exc.strerror or exc}") from exc

    # -- lending and keeping -------------------------------------------------------------
    def for_slot(self, key: Key, slot: int) -> socket.socket:
        sockets = self.by_key[key]
        return sockets[slot % len(sockets)]

    def retain_only(self, keys: Iterable[Key]) -> list[Key]:
        """Close the sockets of every other key (a listener the configuration dropped, an
        inherited socket nobody claimed); returns the keys closed."""
        wanted = set(keys)
        self.inherited &= wanted
        gone = [key for key in self.by_key if key not in wanted]
        for key in gone:
            for sock in self.by_key.pop(key):
                sock.close()
        return gone

    def for_successor(self) -> tuple[list[int], str]:
        """The descriptors to pass to the next binary and the variable that names them."""
        entries = [(s.fileno(), *key) for key, socks in self.by_key.items() for s in socks]
        if self.admin is not None:
            entries.append((self.admin.fileno(), *_bound_key(self.admin)))
        return [fd for fd, _, _ in entries], json.dumps(entries)

    def close(self) -> None:
        self.retain_only(())
        if self.admin is not None:
            self.admin.close()
            self.admin = None


def _inherited_fds(env: Mapping[str, str]) -> list[tuple[int, Key]]:
    text = env.get(INHERITED_ENV, "")
    if not text:
        return []
    try:
        return [(int(fd), (str(address), int(port))) for fd, address, port in json.loads(text)]
    except (ValueError, TypeError) as exc:
        log.error("ignoring %s=%r: %s", INHERITED_ENV, text, exc)
        return []


def _systemd_fds(env: Mapping[str, str]) -> list[tuple[int, Key]]:
    """sd_listen_fds(3): the variables count only when LISTEN_PID names this process."""
    try:
        count = int(env.get("LISTEN_FDS", "0"))
        pid = int(env.get("LISTEN_PID", "0"))
    except ValueError:
        return []
    if count <= 0 or pid != os.getpid():
        return []
    found = []
    for fd in range(_SD_LISTEN_FDS_START, _SD_LISTEN_FDS_START + count):
        probe = socket.socket(fileno=os.dup(fd))
        try:
            if probe.type != socket.SOCK_STREAM or probe.family not in (
                    socket.AF_INET, socket.AF_INET6):
                log.warning("ignoring systemd socket fd %d: not a TCP socket", fd)
                continue
            found.append((fd, _bound_key(probe)))
        finally:
            probe.close()
    return found
