"""The sqlite backend (aiosqlite): one file shared by every process, WAL, frecency eviction, self-healing.

Faults never reach a caller: a file that is garbage, truncated or of another format is renamed aside (kept) and
rebuilt; a read-only or full disk turns the backend off (every call a miss) until it is closed and reopened. Each
fault is logged once as a warning on the ``steadytext_async`` logger.

Frecency: each entry has ``rank = log2(score) + t / half_life`` where ``score`` is its hit count decayed by half
every ``half_life`` seconds. Comparing ranks compares decayed scores at any common time, so the lowest rank is
the coldest entry and the column never needs rewriting as time passes.

The file's format, creating and checking it, and moving a broken one aside are :mod:`.sqlite_file`; the connection,
safe to fork around, is :mod:`.sqlite_connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

import aiosqlite

from .base import NO_CLAIM, CachedEntry, CacheStats, Claim
from .codec import CodecError, decode_entry, encode_entry
from .sqlite_connection import connect
from .sqlite_file import (
    APPLICATION_ID,
    CACHE_FILENAME,
    SCHEMA_VERSION,
    Broken,
    Newer,
    check_schema,
    move_files,
    prepare_file,
)

__all__ = ["APPLICATION_ID", "CACHE_FILENAME", "SCHEMA_VERSION", "SqliteBackend"]

logger = logging.getLogger("steadytext_async")

T = TypeVar("T")

_EVICT = """
DELETE FROM entries WHERE key IN (
    SELECT key FROM (
        SELECT key,
               SUM(size) OVER w AS total,
               ROW_NUMBER() OVER w AS n
        FROM entries
        WINDOW w AS (ORDER BY rank DESC, key ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    ) WHERE total > ? OR n > ?
)
"""

# Primary sqlite result codes (``exc.sqlite_errorcode & 0xFF``).
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_UNAVAILABLE = {3, 8, 10, 13, 14, 23}  # PERM, READONLY, IOERR, FULL, CANTOPEN, AUTH


def _frecency(rank: float, hits: float, now_units: float) -> float:
    """Rank after ``hits`` more accesses at time ``now_units`` (in half-lives)."""
    decayed = 2.0 ** max(-1000.0, min(1000.0, rank - now_units))
    return math.log2(decayed + hits) + now_units


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


class SqliteBackend:
    """A :class:`~steadytext_async._cache.base.CacheBackend` on one sqlite file (safe across processes)."""

    def __init__(
        self,
        path: Path,
        *,
        max_entries: int = 50_000,
        max_bytes: int = 256 * 1024 * 1024,
        busy_timeout: float = 5.0,
        half_life: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.busy_timeout = busy_timeout
        self.half_life = half_life
        self.clock = clock
        self.errors = 0
        self._conn: aiosqlite.Connection | None = None
        self._disabled: str | None = None
        self._open_lock: asyncio.Lock | None = None
        self._write_lock: asyncio.Lock | None = None

    # -- CacheBackend ----------------------------------------------------------------------------------------
    async def get(self, key: str) -> CachedEntry | None:
        async def op(conn: aiosqlite.Connection) -> CachedEntry | None:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT value, model_sha256, created, hits FROM entries WHERE key = ?", (key,)
                )
            )
            if not rows:
                return None
            value, model_sha256, created, hits = rows[0]
            try:
                return decode_entry(bytes(value), model_sha256=model_sha256, created=created, hits=hits)
            except CodecError as exc:
                logger.warning("dropping unreadable result cache entry (%s)", exc)
                await self._transaction(conn, lambda c: c.execute("DELETE FROM entries WHERE key = ?", (key,)))
                return None

        return await self._run("get", op, None)

    async def put(self, key: str, entry: CachedEntry) -> None:
        value = encode_entry(entry)
        if len(value) > self.max_bytes:
            return
        now = self.clock()

        async def body(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO entries(key, value, size, model_sha256, created, accessed, hits, rank)"
                " VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT(key) DO NOTHING",
                (key, value, len(value), entry.model_sha256, entry.created or now, now, now / self.half_life),
            )
            rows = list(await conn.execute_fetchall("SELECT entries, bytes FROM meta WHERE id = 1"))
            entries, size = rows[0]
            if entries > self.max_entries or size > self.max_bytes:
                # Evict down to 90% of both limits so a full cache does not evict on every put.
                await conn.execute(_EVICT, (int(self.max_bytes * 0.9), max(1, int(self.max_entries * 0.9))))

        async def op(conn: aiosqlite.Connection) -> None:
            await self._transaction(conn, body)

        await self._run("put", op, None)

    async def account(self, hits: Mapping[str, int], misses: int) -> None:
        if not hits and not misses:
            return
        now = self.clock()
        units = now / self.half_life

        async def body(conn: aiosqlite.Connection) -> None:
            if hits:
                await conn.executemany(
                    "UPDATE entries SET hits = hits + ?, accessed = ?, rank = frecency(rank, ?, ?) WHERE key = ?",
                    [(n, now, n, units, k) for k, n in hits.items()],
                )
            await conn.execute(
                "UPDATE meta SET hits = hits + ?, misses = misses + ? WHERE id = 1", (sum(hits.values()), misses)
            )

        async def op(conn: aiosqlite.Connection) -> None:
            await self._transaction(conn, body)

        await self._run("account", op, None)

    async def claim(self, key: str) -> Claim:
        """No cross-process single-flight: processes sharing the file may each produce a key once."""
        return NO_CLAIM

    async def stats(self) -> CacheStats:
        async def op(conn: aiosqlite.Connection) -> CacheStats:
            rows = list(await conn.execute_fetchall("SELECT entries, bytes, hits, misses FROM meta WHERE id = 1"))
            entries, size, hits, misses = rows[0]
            return CacheStats(
                entries=entries, bytes=size, hits=hits, misses=misses, path=str(self.path), errors=self.errors
            )

        unavailable = CacheStats(path=str(self.path), errors=self.errors, available=False)
        return await self._run("stats", op, unavailable)

    async def clear(self) -> None:
        async def body(conn: aiosqlite.Connection) -> None:
            await conn.execute("DELETE FROM entries")
            await conn.execute("UPDATE meta SET entries = 0, bytes = 0, hits = 0, misses = 0 WHERE id = 1")

        async def op(conn: aiosqlite.Connection) -> None:
            await self._transaction(conn, body)
            async with self._lock():
                with contextlib.suppress(sqlite3.Error):  # reclaim space; another process may hold the file
                    await conn.execute("VACUUM")

        self._disabled = None  # an explicit clear retries a backend that was turned off
        await self._run("clear", op, None)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        self._disabled = None
        self._open_lock = self._write_lock = None  # a later reopen may run on another event loop
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def _after_fork(self) -> None:
        """In a forked child: drop the parent's connection (its thread did not survive the fork); reopen lazily."""
        self._conn = None
        self._open_lock = self._write_lock = None

    # -- connection and fault handling -----------------------------------------------------------------------
    async def _run(self, what: str, op: Callable[[aiosqlite.Connection], Awaitable[T]], default: T) -> T:
        """Run ``op`` on an open connection; turn every storage fault into ``default``."""
        for attempt in (0, 1):
            try:
                conn = await self._connection()
                if conn is None:
                    return default
                return await op(conn)
            except Broken as exc:
                await self._move_aside(exc.reason)
            except Newer as exc:
                await self._disable(str(exc))
                return default
            except sqlite3.Error as exc:
                code = _code(exc)
                if getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY_DBMOVED":
                    await self.aclose()  # another process moved a broken file aside: use the new one
                elif code in _CORRUPT:
                    await self._move_aside(f"{what}: {exc}")
                elif code in _UNAVAILABLE:
                    await self._disable(f"{what}: {exc}")
                    return default
                else:  # busy beyond the timeout, locked, ...: skip this operation only
                    self.errors += 1
                    logger.warning("result cache %s skipped: %s", what, exc)
                    return default
            except OSError as exc:
                await self._disable(f"{what}: {exc}")
                return default
            except ValueError as exc:  # aiosqlite: connection closed underneath us
                self.errors += 1
                logger.warning("result cache %s skipped: %s", what, exc)
                await self.aclose()
                return default
            if attempt:
                break
        return default

    async def _connection(self) -> aiosqlite.Connection | None:
        if self._disabled is not None:
            return None
        if self._conn is not None:
            return self._conn
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._conn is None and self._disabled is None:
                self._conn = await self._open()
        return self._conn

    async def _open(self) -> aiosqlite.Connection:
        # Opening (creation, format check, switch to WAL) is serialised across processes by a lock file: two
        # processes creating or converting the same new file at once otherwise meet SQLITE_BUSY.
        lock = await asyncio.to_thread(prepare_file, self.path, self.busy_timeout)
        try:
            conn = await connect(self.path, timeout=self.busy_timeout)
            try:
                await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                await check_schema(conn, self._lock())  # before WAL: a foreign file is moved aside unmodified
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute("PRAGMA synchronous = NORMAL")
                await conn.create_function("frecency", 3, _frecency, deterministic=True)
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.close()
                raise
        finally:
            if lock is not None:  # the lock file is not the database: sqlite's own locks stay
                lock.release()
        return conn

    def _lock(self) -> asyncio.Lock:
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return self._write_lock

    async def _transaction(
        self, conn: aiosqlite.Connection, body: Callable[[aiosqlite.Connection], Awaitable[object]]
    ) -> None:
        async with self._lock():
            if conn.in_transaction:  # left open by an interrupted operation
                await conn.execute("ROLLBACK")
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await body(conn)
                await conn.execute("COMMIT")
            except BaseException:
                await asyncio.shield(self._rollback(conn))
                raise

    @staticmethod
    async def _rollback(conn: aiosqlite.Connection) -> None:
        with contextlib.suppress(Exception):
            await conn.execute("ROLLBACK")

    async def _move_aside(self, reason: str) -> None:
        await self.aclose()
        stamp = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        target = self.path.with_name(f"{self.path.name}.broken-{stamp}")
        try:
            await asyncio.to_thread(move_files, self.path, target)
        except OSError as exc:
            await self._disable(f"cannot move aside a broken cache file ({reason}): {exc}")
            return
        self.errors += 1
        logger.warning(
            "result cache file %s was unusable (%s); kept it as %s and started a new one", self.path, reason, target
        )

    async def _disable(self, reason: str) -> None:
        await self.aclose()
        self._disabled = reason
        self.errors += 1
        logger.warning("result cache unavailable, continuing without it: %s", reason)
