"""The sqlite backend: round trip, frecency eviction, file mode, and every fault degrading without an exception."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _cache_helpers import entry
from conftest import reap

from steadytext_async._cache import CachedEntry, SqliteBackend
from steadytext_async._cache.codec import encode_entry
from steadytext_async._cache.sqlite import APPLICATION_ID, SCHEMA_VERSION
from steadytext_async._models import Chunk, TokenLogprob

LOGGER = "steadytext_async"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def backend(tmp_path: Path, **kwargs: object) -> SqliteBackend:
    return SqliteBackend(tmp_path / "cache" / "results.sqlite3", **kwargs)  # type: ignore[arg-type]


def broken_copies(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if ".broken-" in p.name and not p.name.endswith(("-wal", "-shm")))


def side_file_modes(path: Path) -> list[int]:
    """Permission bits of the -wal/-shm files that exist next to ``path``."""
    sides = (Path(f"{path}{suffix}") for suffix in ("-wal", "-shm"))
    return [p.stat().st_mode & 0o777 for p in sides if p.exists()]


async def test_round_trip_and_stats(tmp_path: Path) -> None:
    b = backend(tmp_path)
    e = entry("hello there world", logprobs=True)
    assert await b.get("k") is None
    await b.put("k", e)
    got = await b.get("k")
    assert got is not None
    assert got.chunks == e.chunks and got.result == e.result and got.model_sha256 == e.model_sha256
    await b.account({"k": 2}, 3)
    stats = await b.stats()
    assert (stats.entries, stats.hits, stats.misses, stats.errors) == (1, 2, 3, 0)
    assert stats.bytes > 0 and stats.hit_ratio == pytest.approx(0.4)
    got = await b.get("k")
    assert got is not None and got.hits == 2
    await b.clear()
    assert (await b.stats()).entries == 0 and await b.get("k") is None
    await b.aclose()


async def test_infinite_logprob_round_trips_exactly(tmp_path: Path) -> None:
    b = backend(tmp_path)
    tok = TokenLogprob(token="a", token_id=1, bytes=[97], logprob=float("-inf"))
    e = entry("a")
    e = CachedEntry(chunks=(Chunk(text="a", token_ids=[1], logprob=float("-inf"), tokens=[tok]),), result=e.result)
    await b.put("k", e)
    got = await b.get("k")
    assert got is not None and got.chunks == e.chunks
    await b.aclose()


async def test_file_created_with_mode_0600(tmp_path: Path) -> None:
    b = backend(tmp_path)
    await b.put("k", entry("a b"))
    assert (b.path.stat().st_mode & 0o777) == 0o600
    assert all(mode & 0o077 == 0 for mode in side_file_modes(b.path))
    await b.aclose()


async def test_eviction_keeps_hot_entries_and_drops_cold_ones(tmp_path: Path) -> None:
    clock = Clock()
    b = backend(tmp_path, max_entries=10, clock=clock)
    for i in range(10):
        await b.put(f"k{i}", entry(f"text {i}"))
    hot = {"k1", "k4", "k7"}
    await b.account({k: 5 for k in hot}, 0)
    for i in range(10, 20):
        clock.now += 1.0
        await b.put(f"k{i}", entry(f"text {i}"))
        await b.account({k: 1 for k in hot}, 0)
    present = {k for k in (f"k{i}" for i in range(20)) if await b.get(k) is not None}
    assert hot <= present
    assert len(present) <= 10
    assert not present & {f"k{i}" for i in range(10)} - hot  # every cold old entry went first
    stats = await b.stats()
    assert stats.entries == len(present)
    await b.aclose()


async def test_eviction_weighs_recency_against_frequency(tmp_path: Path) -> None:
    day = 86_400.0
    clock = Clock()
    b = backend(tmp_path, max_entries=2, half_life=day, clock=clock)
    await b.put("old_frequent", entry("a"))
    await b.account({"old_frequent": 7}, 0)  # score 8, then decays by half per day
    clock.now += 5 * day  # score 8 / 32 = 0.25
    await b.put("new_once", entry("b"))  # score 1
    await b.put("newest", entry("c"))
    assert await b.get("old_frequent") is None
    assert await b.get("new_once") is not None

    await b.clear()
    await b.put("recent_frequent", entry("a"))
    await b.account({"recent_frequent": 7}, 0)
    clock.now += 1 * day  # score 4
    await b.put("new_once", entry("b"))
    await b.put("newest", entry("c"))
    assert await b.get("recent_frequent") is not None
    assert await b.get("new_once") is None
    await b.aclose()


async def test_byte_limit_is_respected(tmp_path: Path) -> None:
    one = len(encode_entry(entry("t0", pad=2000)))
    b = backend(tmp_path, max_bytes=one * 5 + 10)
    for i in range(12):
        await b.put(f"k{i}", entry(f"t{i}", pad=2000))
    stats = await b.stats()
    assert 0 < stats.bytes <= one * 5 + 10
    assert stats.entries <= 5
    await b.put("huge", entry("h", pad=one * 10))  # larger than the whole cache: not stored
    assert await b.get("huge") is None
    await b.aclose()


async def test_unreadable_value_is_dropped(tmp_path: Path) -> None:
    b = backend(tmp_path)
    await b.put("k", entry("a b"))
    await b.aclose()
    with sqlite3.connect(b.path) as db:
        db.execute("UPDATE entries SET value = ? WHERE key = 'k'", (b"not zlib",))
    assert await b.get("k") is None
    assert (await b.stats()).entries == 0
    await b.aclose()


# -- faults -----------------------------------------------------------------------------------------------


async def _assert_rebuilt(b: SqliteBackend, original: bytes, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert await b.get("k") is None
        await b.put("k2", entry("fresh"))
        assert await b.get("k2") is not None
    copies = broken_copies(b.path)
    assert len(copies) == 1 and copies[0].read_bytes() == original
    assert any("kept it as" in r.getMessage() for r in caplog.records)
    with sqlite3.connect(b.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    await b.aclose()


async def test_garbage_file_is_moved_aside_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = backend(tmp_path)
    b.path.parent.mkdir(parents=True)
    garbage = os.urandom(3000)
    b.path.write_bytes(garbage)
    await _assert_rebuilt(b, garbage, caplog)


async def test_text_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = backend(tmp_path)
    b.path.parent.mkdir(parents=True)
    b.path.write_bytes(b"hello\n")
    await _assert_rebuilt(b, b"hello\n", caplog)


async def test_truncated_file_is_moved_aside_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = backend(tmp_path)
    for i in range(60):
        await b.put(f"k{i}", entry(f"entry {i}", pad=3000))
    await b.aclose()
    data = b.path.read_bytes()
    assert side_file_modes(b.path) == []
    for cut in (len(data) // 2, len(data) // 2 + 100):  # on and off a page boundary
        b.path.write_bytes(data[:cut])
        caplog.clear()
        await _assert_rebuilt(b, data[:cut], caplog)
        for p in b.path.parent.iterdir():
            if ".broken-" in p.name:
                p.unlink()


async def test_older_format_version_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = backend(tmp_path)
    await b.put("k", entry("old format"))
    await b.aclose()
    db = sqlite3.connect(b.path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
    db.close()
    await _assert_rebuilt(b, b.path.read_bytes(), caplog)


async def test_newer_format_version_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = backend(tmp_path)
    await b.put("k", entry("new format"))
    await b.aclose()
    db = sqlite3.connect(b.path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    original = b.path.read_bytes()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert await b.get("k") is None
        await b.put("k2", entry("b"))
    assert any("newer" in r.getMessage() for r in caplog.records)
    assert broken_copies(b.path) == [] and b.path.read_bytes() == original
    await b.aclose()


async def test_foreign_sqlite_file_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = backend(tmp_path)
    b.path.parent.mkdir(parents=True)
    db = sqlite3.connect(b.path)
    db.execute("CREATE TABLE other(x)")
    db.close()
    assert APPLICATION_ID != 0
    await _assert_rebuilt(b, b.path.read_bytes(), caplog)


async def test_uncreatable_directory_degrades_to_no_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "blocker").write_text("a file where the cache directory should be")
    b = SqliteBackend(tmp_path / "blocker" / "cache" / "results.sqlite3")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await b.put("k", entry("a"))
        assert await b.get("k") is None
        stats = await b.stats()
    assert not stats.available
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1  # warned once
    await b.aclose()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_read_only_directory_degrades_to_no_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        b = SqliteBackend(ro / "results.sqlite3")
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            await b.put("k", entry("a"))
            assert await b.get("k") is None
        assert any("unavailable" in r.getMessage() for r in caplog.records)
        await b.aclose()
    finally:
        ro.chmod(0o700)


async def test_read_only_database_degrades_to_no_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend(tmp_path)
    await b.put("k", entry("a"))
    await b.aclose()
    real_connect = sqlite3.connect

    def read_only(database: str, *, timeout: float, isolation_level: None) -> sqlite3.Connection:
        return real_connect(f"file:{database}?mode=ro", uri=True, timeout=timeout, isolation_level=isolation_level)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await b.put("k2", entry("b"))
        await b.account({"k": 1}, 1)
        assert await b.get("k2") is None
    assert any("unavailable" in r.getMessage() and "readonly" in r.getMessage() for r in caplog.records)
    await b.aclose()


async def test_disk_full_degrades_to_no_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    b = backend(tmp_path)
    await b.put("k", entry("a"))
    conn = b._conn
    assert conn is not None
    pages = next(iter(await conn.execute_fetchall("PRAGMA page_count")))[0]
    await conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full for this connection
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await b.put("big", entry("b", pad=100_000))
        assert await b.get("big") is None
        assert await b.get("k") is None  # turned off: every call is a miss
    assert any("unavailable" in r.getMessage() and "full" in r.getMessage() for r in caplog.records)
    await b.aclose()
    assert await b.get("k") is not None  # reopened after close: the healthy file still serves
    await b.aclose()


async def test_other_connections_see_writes(tmp_path: Path) -> None:
    a, b = backend(tmp_path), backend(tmp_path)
    assert await b.get("k") is None
    await a.put("k", entry("shared"))
    got = await b.get("k")
    assert got is not None and got.result.text == "shared"
    await a.aclose()
    await b.aclose()


def test_an_unclosed_backend_does_not_hang_interpreter_exit(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from steadytext_async._cache import SqliteBackend\n"
        "b = SqliteBackend(Path(sys.argv[1]))\n"
        "asyncio.run(b.stats())\n"
        "print('opened', b._conn is not None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "results.sqlite3")],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0 and out.stdout.strip() == "opened True", out.stderr


LOCK_HOLDER = r"""
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
lock.release()
"""


def hold_lock(path: str, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the open lock for ``seconds`` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, path, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    proc.stdout.close()  # it prints nothing more; an open pipe would leak (a ResourceWarning, an error here)
    return proc


async def test_opening_waits_for_another_process_holding_the_open_lock(tmp_path: Path) -> None:
    import time

    b = backend(tmp_path, busy_timeout=5.0)
    b.path.parent.mkdir(parents=True)
    holder = await asyncio.to_thread(hold_lock, f"{b.path}.lock", 0.6)  # starting a process blocks: not on the loop
    try:
        t = time.monotonic()
        await b.put("k", entry("serialised"))  # opening waits for the lock (a thread, not the loop)
        waited = time.monotonic() - t
        assert 0.3 < waited < 4.0 and (await b.get("k")) is not None
    finally:
        await asyncio.to_thread(holder.wait, 10)
        await b.aclose()


async def test_opening_proceeds_unserialised_when_the_lock_is_held_too_long(tmp_path: Path) -> None:
    b = backend(tmp_path, busy_timeout=0.3)
    b.path.parent.mkdir(parents=True)
    holder = await asyncio.to_thread(hold_lock, f"{b.path}.lock", 5)
    try:
        await b.put("k", entry("unserialised"))
        got = await b.get("k")
        assert got is not None and got.result.text == "unserialised" and b.errors == 0
    finally:
        holder.kill()
        await asyncio.to_thread(holder.wait)
        await b.aclose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forks_beside_a_busy_backend_never_hang_or_find_the_file_broken(tmp_path: Path) -> None:
    """``gunicorn --preload``, ``multiprocessing``: a process forks while its cache writes, and each child opens the
    same file at once, reads and takes the write lock. Without the fork gate (``_cache/sqlite_connection.py``) about
    2 % of these children hung on a SQLite mutex the parent's writer thread held at the fork (measured: 5 and 6 of
    300; 200 forks find that with 98 % probability). Without its hold over whole transactions, every child forked
    inside one could never write: it inherits the record that its process holds the file's write lock, which the
    kernel does not give it (measured: all 4 children of a client's first request lost their writes, after 2 busy
    timeouts each; here, dozens of the children)."""
    b = backend(tmp_path)
    stop = threading.Event()
    written = [0]

    async def write_until_stopped() -> None:
        while not stop.is_set():  # large entries: the writer thread spends most of its time inside SQLite
            await b.put(f"k{written[0]}", entry(f"text {written[0]}", pad=200_000))
            written[0] += 1
        await b.aclose()

    writer = threading.Thread(target=asyncio.run, args=(write_until_stopped(),))
    writer.start()
    failed: list[tuple[int, int]] = []
    try:
        while not written[0]:
            time.sleep(0.01)
        for n in range(200):
            pid = os.fork()
            if pid == 0:  # the child: a plain sqlite3 read of the same file, under a watchdog
                code = 1
                try:
                    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's handler
                    signal.alarm(10)
                    con = sqlite3.connect(b.path, timeout=5, isolation_level=None)
                    if con.execute("SELECT count(*) FROM entries").fetchone()[0] > 0:
                        code = 2
                        con.execute("BEGIN IMMEDIATE")  # "database is locked" after 5 s if the lock is inherited
                        con.execute("COMMIT")
                        code = 0
                    con.close()
                finally:
                    os._exit(code)
            code = reap(pid, 20)
            if code:
                failed.append((n, code))
    finally:
        stop.set()
        writer.join(30)
    assert not failed, failed  # (fork number, exit code): -14 is a hang the watchdog ended
    assert written[0] > 1
    con = sqlite3.connect(b.path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()
    assert not broken_copies(b.path)
