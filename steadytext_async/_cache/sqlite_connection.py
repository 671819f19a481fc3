"""aiosqlite's connection, made safe to fork around: no process forks while one of its threads is inside SQLite.

SQLite keeps process-wide state: static mutexes, and one record per open database file of the locks this process
holds and of its WAL-index mapping, which every connection to that file shares. A child forked while another
thread of the parent is inside a SQLite call inherits that state mid-change, and its first connection to the same
file can hang on a mutex nobody will release, or read the WAL index mid-update and find the file "malformed" (the
backend would then move the whole shared cache aside). Measured: forking 200 times beside a thread writing in a
loop, 8 to 13 children failed that way, 1 of them hung; with :data:`GATE` none did, and the file stayed intact.
This is what ``gunicorn --preload`` and ``multiprocessing`` do to a process whose client has a sqlite cache.

Each call an aiosqlite thread makes (connecting, every statement, closing) holds :data:`GATE` shared, and so does
an open transaction, from the statement that opened it to the one that ended it; a fork takes the gate exclusively
(a :func:`~steadytext_async._process.on_fork` hook): it waits until no call or transaction is in flight and lets
none start until the fork is done (a transaction's own statements go on, so that it can end). A child forked
inside a transaction inherits the record that its process holds the file's write lock, which the kernel does not
give it: every write it tries then waits out the busy timeout and is dropped (measured: 4 forked children writing
after ``asyncio.run`` returned, all 4 writes lost and 10 s each; with the hold, none lost, 0.1 s). A call lasts at
most the busy timeout and its own work; a fork waits at most :data:`FORK_WAIT` seconds and then proceeds with a
warning.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["FORK_WAIT", "GATE", "ForkGate", "Transaction", "connect"]

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

    def call(self, fn: Callable[[], T], txn: Transaction | None = None) -> T:
        """Run ``fn`` (one SQLite call) under a shared hold. With ``txn`` (its connection's transaction state), the
        hold is kept while a transaction is open after the call, and a call inside one never waits for a fork (the
        fork waits for it to end)."""
        if txn is None or not txn.holding:
            with self._cond:
                while self._forks:
                    self._cond.wait()
                self._calls += 1
        try:
            return fn()
        finally:
            keep = txn is not None and txn.open()
            if txn is not None:
                txn.holding = keep
            if not keep:
                self.release()

    def release(self) -> None:
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


class Transaction:
    """Whether a connection has a transaction open (read and written on its aiosqlite thread only)."""

    def __init__(self, conn: Callable[[], sqlite3.Connection | None]) -> None:
        self._conn = conn
        self.holding = False  # the connection holds GATE for its open transaction

    def open(self) -> bool:
        conn = self._conn()
        try:
            return conn is not None and conn.in_transaction
        except sqlite3.ProgrammingError:  # closed
            return False


class _Connection(aiosqlite.Connection):
    """Every function aiosqlite's thread runs for this connection runs through :data:`GATE`, and an open
    transaction keeps its hold between statements."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        self._txn = Transaction(lambda: self._connection)
        super().__init__(self._gated(connector), iter_chunk_size=64)
        # aiosqlite's thread is not a daemon: an unclosed connection would hang interpreter exit.
        self._thread.daemon = True

    def _gated(self, fn: Callable[..., T]) -> Callable[..., T]:
        txn = self._txn

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> T:
            return GATE.call(functools.partial(fn, *args, **kwargs), txn)

        return run

    async def _execute(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        result: T = await super()._execute(self._gated(fn), *args, **kwargs)  # type: ignore[no-untyped-call]
        return result

    def stop(self) -> asyncio.Future[Any] | None:
        """aiosqlite closes an unclosed connection here outside :meth:`_execute`: close it through the gate first,
        so that a transaction left open ends its hold (closing twice is harmless)."""
        conn = self._connection
        if conn is not None and self._running:
            self._tx.put_nowait((None, self._gated(conn.close)))
        future: asyncio.Future[Any] | None = super().stop()
        return future


def connect(path: Path, *, timeout: float) -> aiosqlite.Connection:
    """An unopened aiosqlite connection to ``path`` in autocommit mode (await it to open), fork-safe as above."""
    return _Connection(functools.partial(sqlite3.connect, str(path), timeout=timeout, isolation_level=None))
