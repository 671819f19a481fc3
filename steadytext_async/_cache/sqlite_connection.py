"""aiosqlite's connection, made safe to fork around: no process forks while one of its threads is inside SQLite.

SQLite keeps process-wide state: static mutexes, and one record per open database file of the locks this process
holds and of its WAL-index mapping, which every connection to that file shares. A child forked while another
thread of the parent is inside a SQLite call inherits that state mid-change, and its first connection to the same
file can hang on a mutex nobody will release, or read the WAL index mid-update and find the file "malformed" (the
backend would then move the whole shared cache aside). Measured: forking 200 times beside a thread writing in a
loop, 8 to 13 children failed that way, 1 of them hung; with :data:`GATE` none did, and the file stayed intact.
This is what ``gunicorn --preload`` and ``multiprocessing`` do to a process whose client has a sqlite cache.

Each call an aiosqlite thread makes (connecting, every statement, closing) holds :data:`GATE` shared; a fork
takes it exclusively (a :func:`~steadytext_async._process.on_fork` hook): it waits until no call is in flight and
lets none start until the fork is done. A call lasts at most the busy timeout and its own work; a fork waits at
most :data:`FORK_WAIT` seconds and then proceeds with a warning.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .._process import on_fork

__all__ = ["FORK_WAIT", "GATE", "ForkGate", "connect"]

logger = logging.getLogger("steadytext_async")

T = TypeVar("T")

FORK_WAIT = 30.0  # seconds a fork waits for SQLite calls in flight


class ForkGate:
    """Shared holds for SQLite calls, an exclusive one for a fork."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._calls = 0  # SQLite calls in flight
        self._forks = 0  # forks in progress (each between its before and after hooks)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one SQLite call) under a shared hold."""
        with self._cond:
            while self._forks:
                self._cond.wait()
            self._calls += 1
        try:
            return fn()
        finally:
            with self._cond:
                self._calls -= 1
                if not self._calls:
                    self._cond.notify_all()

    def before_fork(self) -> None:
        deadline = time.monotonic() + FORK_WAIT
        with self._cond:
            self._forks += 1
            while self._calls:
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning("forking with %d sqlite call(s) in flight after %.0f s", self._calls, FORK_WAIT)
                    return
                self._cond.wait(left)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forks -= 1
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        """The parent's calls and forks are not this process's: start afresh (the condition may be held)."""
        self._reset()


GATE = ForkGate()
# order -1: the gate waits for SQLite calls before any other guard is taken (none is held while it waits)
on_fork(before=GATE.before_fork, parent=GATE.after_fork_in_parent, child=GATE.after_fork_in_child, order=-1)


def _gated(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        return GATE.call(functools.partial(fn, *args, **kwargs))

    return run


class _Connection(aiosqlite.Connection):
    """Every function aiosqlite's thread runs for this connection runs through :data:`GATE`."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(_gated(connector), iter_chunk_size=64)
        # aiosqlite's thread is not a daemon: an unclosed connection would hang interpreter exit.
        self._thread.daemon = True

    async def _execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        result: T = await super()._execute(_gated(fn), *args, **kwargs)  # type: ignore[no-untyped-call]
        return result


def connect(path: Path, *, timeout: float) -> aiosqlite.Connection:
    """An unopened aiosqlite connection to ``path`` in autocommit mode (await it to open), fork-safe as above."""
    return _Connection(functools.partial(sqlite3.connect, str(path), timeout=timeout, isolation_level=None))
