"""The host-wide decode-thread budget, shared through the OS.

Each decode thread a worker runs needs one *token*: an exclusive ``flock`` on one of ``size`` slot files in a
per-user directory (``STEADYTEXT_BUDGET_DIR``; default under the user runtime dir). Every pool in every process
of the host takes its tokens from the same files, so the decode threads of all processes together never exceed
``size`` (the usable cores by default), which is what keeps llama.cpp from collapsing (see DESIGN.md: once decode
threads exceed the cores, throughput falls 20–100×).

- The kernel releases a dead process's locks, so a crashed holder never blocks anyone.
- A process that waits for a token holds a shared lock on ``waiting``; holders then take no more than they need
  (no greedy "lone request takes every core" while another process waits).
- ``flock`` locks belong to the open file description, so two pools in one process exclude each other as well.
- After ``fork`` a child must not release inherited locks (that would release the parent's): :meth:`forget`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["HostBudget", "Token"]


class Token:
    """One held slot (one decode thread's worth of the host's cores)."""

    __slots__ = ("fd", "slot")

    def __init__(self, fd: int, slot: int) -> None:
        self.fd = fd
        self.slot = slot


class HostBudget:
    def __init__(self, directory: Path, size: int) -> None:
        self.directory = directory
        self.size = size
        self._ready = False

    def _path(self, name: str) -> str:
        if not self._ready:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._ready = True
        return str(self.directory / name)

    def try_acquire(self) -> Token | None:
        """One free slot, or None (never blocks)."""
        for slot in range(self.size):
            fd = os.open(self._path(f"slot-{slot}"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return Token(fd, slot)
        return None

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Announce a waiter (a shared lock on ``waiting``) while the body polls for a slot."""
        fd = os.open(self._path("waiting"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # also releases the shared lock

    def others_waiting(self) -> bool:
        """True when some process (or pool) is waiting for a slot."""
        fd = os.open(self._path("waiting"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    @staticmethod
    def release(token: Token) -> None:
        with contextlib.suppress(OSError):
            os.close(token.fd)  # closing the only descriptor releases the lock

    @staticmethod
    def forget(token: Token) -> None:
        """In a forked child: drop an inherited token without unlocking the parent's slot."""
        with contextlib.suppress(OSError):
            os.close(token.fd)  # the parent's descriptor still holds the lock
