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
- A holder writes its pid into the slot file, so a pool that has waited too long can say who holds the cores
  (:meth:`holders`) and whether they are stopped (a Ctrl-Z'd run holds its slots but uses no core).
- An unusable directory (a file in the way, no permission) is an :class:`InvalidRequestError` naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..._exceptions import InvalidRequestError
from ..._process import on_fork

__all__ = ["Holder", "HostBudget", "Token"]


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """A process holding slots: its pid, its scheduler state (``T``: stopped) and command line."""

    pid: int
    state: str
    command: str

    @property
    def stopped(self) -> bool:
        return self.state in ("T", "t")

    def __str__(self) -> str:
        return f"pid {self.pid}{' (stopped)' if self.stopped else ''} {self.command[:120]}".rstrip()


def _holder(pid: int) -> Holder | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None
    return Holder(pid, stat.rpartition(")")[2].split()[0], command.strip())


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
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise self._unusable(exc) from None
            self._ready = True
        return str(self.directory / name)

    def _unusable(self, exc: OSError) -> InvalidRequestError:
        return InvalidRequestError(
            f"the host thread budget directory {self.directory} is unusable ({exc.strerror or exc}); "
            "set STEADYTEXT_BUDGET_DIR to a writable directory or STEADYTEXT_HOST_BUDGET=0"
        )

    def _open(self, name: str) -> int:
        try:
            return os.open(self._path(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._unusable(exc) from None

    def try_acquire(self) -> Token | None:
        """One free slot, or None (never blocks)."""
        for slot in range(self.size):
            fd = self._open(f"slot-{slot}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            with contextlib.suppress(OSError):  # who holds it, for a waiter's warning
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return Token(fd, slot)
        return None

    def holders(self) -> list[Holder]:
        """The processes holding slots now (as far as their slot files tell), each once."""
        pids: set[int] = set()
        for slot in range(self.size):
            with contextlib.suppress(OSError, ValueError):
                pids.add(int(Path(self._path(f"slot-{slot}")).read_text().strip() or "0"))
        return [h for pid in sorted(pids - {0}) if (h := _holder(pid)) is not None]

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Announce a waiter (a shared lock on ``waiting``) while the body polls for a slot."""
        fd = self._open("waiting")
        _WAITING_FDS.add(fd)  # a forked child closes its copy (see _after_fork_in_child)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            _WAITING_FDS.discard(fd)
            os.close(fd)  # also releases the shared lock

    def others_waiting(self) -> bool:
        """True when some process (or pool) is waiting for a slot. The probe's exclusive lock is held under
        :data:`_FORK_GUARD`: a child forked while it was held would keep it (a flock belongs to the open file,
        which the child shares) and every waiter on the host would block on it for the child's lifetime."""
        with _FORK_GUARD:
            fd = self._open("waiting")
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


# -- fork safety: flock locks belong to open files, which a forked child shares --------------------------------------
_FORK_GUARD = threading.Lock()  # no fork while the "others waiting" probe holds its exclusive lock
_WAITING_FDS: set[int] = set()  # descriptors announcing a waiter in this process


def _after_fork_in_child() -> None:
    """The child is not waiting: close its copies of the parent's announcements (the parent's stay locked)."""
    global _FORK_GUARD
    _FORK_GUARD = threading.Lock()
    for fd in list(_WAITING_FDS):
        with contextlib.suppress(OSError):
            os.close(fd)
    _WAITING_FDS.clear()


on_fork(before=lambda: _FORK_GUARD.acquire(), parent=lambda: _FORK_GUARD.release(), child=_after_fork_in_child)
