"""The sqlite cache file itself: its format (schema, application id, version), creating it under a lock file, checking
an existing one, and moving a broken one aside. :mod:`.sqlite` is the backend that uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite
    from filelock import FileLock

__all__ = [
    "APPLICATION_ID",
    "CACHE_FILENAME",
    "SCHEMA_VERSION",
    "Broken",
    "Newer",
    "check_schema",
    "move_files",
    "open_lock_file",
    "prepare_file",
]

CACHE_FILENAME = "results.sqlite3"
APPLICATION_ID = 0x53544341  # "STCA"
SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE entries(
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        size INTEGER NOT NULL,
        model_sha256 TEXT,
        created REAL NOT NULL,
        accessed REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0,
        rank REAL NOT NULL
    )""",
    "CREATE INDEX entries_rank ON entries(rank)",
    """CREATE TABLE meta(
        id INTEGER PRIMARY KEY CHECK (id = 1),
        entries INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        hits INTEGER NOT NULL,
        misses INTEGER NOT NULL
    )""",
    "INSERT INTO meta VALUES (1, 0, 0, 0, 0)",
    """CREATE TRIGGER entries_insert AFTER INSERT ON entries BEGIN
        UPDATE meta SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 1;
    END""",
    """CREATE TRIGGER entries_delete AFTER DELETE ON entries BEGIN
        UPDATE meta SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 1;
    END""",
)


class Broken(Exception):
    """The file is not a usable cache of this version; ``reason`` names why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Newer(Exception):
    """The file belongs to a newer format: not ours to move or rewrite."""


def move_files(path: Path, target: Path) -> None:
    """Rename the database ``path`` and its WAL and shared-memory files to ``target`` (missing ones skipped)."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.replace(f"{path}{suffix}", f"{target}{suffix}")
        except FileNotFoundError:
            pass


def prepare_file(path: Path, busy_timeout: float) -> FileLock | None:
    """Create the directory, take the open lock (or None), create a missing file with mode 0600.

    Never opens an existing database file: closing any descriptor of a file drops this process's POSIX locks
    on it, including those of a live sqlite connection.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = open_lock_file(path, busy_timeout)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return lock
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    os.close(fd)
    return lock


def open_lock_file(path: Path, timeout: float) -> FileLock | None:
    """An exclusive lock on ``<file>.lock`` (waits up to ``timeout``), or None: then open unserialised, with
    sqlite's own locking still in force. Released from another thread than the one that took it."""
    from filelock import FileLock
    from filelock import Timeout as LockTimeout

    lock = FileLock(f"{path}.lock", timeout=timeout, mode=0o600, thread_local=False)
    try:
        lock.acquire()
    except (LockTimeout, OSError):  # held too long elsewhere, or e.g. a read-only directory with a usable file
        return None
    return lock


async def check_schema(conn: aiosqlite.Connection, write_lock: asyncio.Lock) -> None:
    """Create the schema in an empty file; raise :class:`Broken` or :class:`Newer` for a file that is not ours."""
    app_id, version, tables = await _schema_state(conn)
    if app_id == 0 and version == 0 and not tables:
        async with write_lock:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                app_id, version, tables = await _schema_state(conn)
                if app_id == 0 and version == 0 and not tables:
                    for statement in _SCHEMA:
                        await conn.execute(statement)
                    await conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    app_id, version, tables = APPLICATION_ID, SCHEMA_VERSION, 1
                await conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.execute("ROLLBACK")
                raise
    if app_id != APPLICATION_ID:
        raise Broken("not a steadytext-async cache")
    if version > SCHEMA_VERSION:  # a newer steadytext-async shares this file: leave it to that version
        raise Newer(f"written by a newer steadytext-async (format {version}, this one reads {SCHEMA_VERSION})")
    if version != SCHEMA_VERSION:
        raise Broken(f"format version {version}, expected {SCHEMA_VERSION}")


async def _schema_state(conn: aiosqlite.Connection) -> tuple[int, int, int]:
    async def scalar(sql: str) -> int:
        row = next(iter(await conn.execute_fetchall(sql)))
        return int(row[0])

    return (
        await scalar("PRAGMA application_id"),
        await scalar("PRAGMA user_version"),
        await scalar("SELECT count(*) FROM sqlite_master"),
    )
