"""Hardening round 2 (issue 25), the result cache: Redis entry integrity (HMAC, key and output digests, bounded
decompression off the loop, locks without a TTL) (M7) and the front cache's accounting of prompts (M6)."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from _cache_helpers import entry, stream_items
from _redis_server import RedisServer, redis_server_fixture  # noqa: F401 - the "server" fixture

from steadytext_async._cache import ResultCache, SqliteBackend
from steadytext_async._cache.codec import MAGIC, CodecError, pack_entry, unpack_entry
from steadytext_async._cache.frontend import _approx_size
from steadytext_async._cache.redis import RedisBackend
from steadytext_async._config import Settings
from steadytext_async._models import GenerationResult

PREFIX = "st-hard:"
KEY = "k" * 64


def backend(server: RedisServer, tmp_path: Path, name: str = "a", **kw: object) -> RedisBackend:
    local = SqliteBackend(tmp_path / f"local-{name}" / "results.sqlite3")
    return RedisBackend(server.url, local=local, prefix=PREFIX, **kw)  # type: ignore[arg-type]


def forged(text: str) -> bytes:
    """A well-formed value in the format written without a secret, as anyone with write access can make it."""
    e = entry(text)
    try:
        return pack_entry(e, key=KEY)
    except TypeError:  # the format before issue 25 (no key argument)
        return pack_entry(e)


async def test_with_a_secret_a_forged_value_is_a_miss(server: RedisServer, tmp_path: Path) -> None:
    server.client().set(f"{PREFIX}r:{KEY}", forged("attacker text"))
    b = backend(server, tmp_path, secret="shared-s3cret")
    try:
        assert await b.get(KEY) is None
        good = entry("the quick brown fox")
        await b.put(KEY, good)  # the forged value was dropped, so ours is stored
        got = await b.get(KEY)
        assert got is not None and got.result.text == "the quick brown fox"
        other = backend(server, tmp_path, "b", secret="another-secret")
        assert await other.get(KEY) is None  # another secret does not verify it either
        await other.aclose()
    finally:
        await b.aclose()


def test_a_signed_value_is_bound_to_its_key() -> None:
    value = pack_entry(entry("fox"), key=KEY, secret=b"s")
    assert unpack_entry(value, key=KEY, secret=b"s").result.text == "fox"
    with pytest.raises(CodecError):
        unpack_entry(value, key="other", secret=b"s")  # moved to another key


def test_digests_are_checked_without_a_secret() -> None:
    e = entry("fox")
    fp = e.result.fingerprint
    local = dataclasses.replace(
        e, result=e.result.model_copy(update={"fingerprint": fp.model_copy(update={"inputs_sha256": KEY})})
    )
    with pytest.raises(CodecError, match="another request"):
        unpack_entry(pack_entry(local, key=KEY), key="0" * 64)
    lying = e.result.model_copy(update={"fingerprint": fp.model_copy(update={"output_sha256": "0" * 64})})
    with pytest.raises(CodecError, match="output_sha256"):
        unpack_entry(pack_entry(dataclasses.replace(e, result=lying), key=KEY), key=KEY)


def _bomb() -> bytes:
    """A valid header then a zlib stream that inflates to 64 MiB (past the cap the test sets; about 64 KB)."""
    z = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    body = b"".join(z.compress(block) for _ in range(64)) + z.flush()
    return struct.pack(">4sBd32s", MAGIC, 2, 1.0, b"\0" * 32) + body


async def test_a_zlib_bomb_is_refused_bounded_and_off_the_loop(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steadytext_async._cache.codec as codec

    monkeypatch.setattr(codec, "MAX_DECODED_BYTES", 8 << 20, raising=False)  # 8 MiB here (192 MiB by default)
    bomb = _bomb()
    server.client().set(f"{PREFIX}r:{KEY}", bomb)
    b = backend(server, tmp_path)
    loop_thread = threading.current_thread()
    seen: list[threading.Thread] = []

    real = codec._inflate if hasattr(codec, "_inflate") else None
    assert real is not None, "no bounded inflate"

    def spy(blob: bytes) -> bytes:
        seen.append(threading.current_thread())
        return real(blob)

    codec._inflate = spy
    try:
        assert await b.get(KEY) is None
    finally:
        codec._inflate = real
        await b.aclose()
    assert seen and loop_thread not in seen
    assert server.client().get(f"{PREFIX}r:{KEY}") is None  # dropped


async def test_a_lock_without_ttl_does_not_stall_waiters(server: RedisServer, tmp_path: Path) -> None:
    server.client().set(f"{PREFIX}lock:{KEY}", "squatter")  # no expiry
    c = ResultCache(backend(server, tmp_path))
    calls = 0

    async def produce():  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        for item in stream_items("fresh text"):
            yield item

    t0 = time.monotonic()
    try:
        async with asyncio.timeout(20):
            items = [i async for i in c.stream(KEY, produce)]
    finally:
        await c.aclose()
    assert time.monotonic() - t0 < 15  # the 600 s claim timeout was not waited out
    assert calls == 1 and isinstance(items[-1], GenerationResult) and items[-1].text == "fresh text"


def test_settings_carry_the_secret_without_showing_it() -> None:
    s = Settings.from_env({"STEADYTEXT_CACHE_SECRET": "hunter2-secret"})
    assert s.cache_secret == "hunter2-secret"
    assert "hunter2" not in repr(s)


# -- M6: the front cache counts the prompt held by a result's fingerprint --------------------------------------------


def test_front_cache_size_counts_the_prompt() -> None:
    items = stream_items("short answer")
    result = items[-1]
    assert isinstance(result, GenerationResult)
    big = result.model_copy(update={"fingerprint": result.fingerprint.model_copy(update={"prompt": "p" * 5_000_000})})
    assert _approx_size((*items[:-1], big)) >= 5_000_000
