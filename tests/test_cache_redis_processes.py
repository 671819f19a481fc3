"""Redis shared by processes: 8 processes x one request -> one generation; the real model across two processes;
nothing secret in Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from _redis_server import PASSWORD, RedisServer, redis_server_fixture  # noqa: F401 - the "server" fixture
from _together import run_together

PROCESSES = 8

WORKER = r"""
import asyncio, json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from _cache_helpers import stream_items
from steadytext_async._cache import ResultCache, SqliteBackend
from steadytext_async._cache.redis import RedisBackend

url, counter, local = sys.argv[1], sys.argv[2], Path(sys.argv[3])

async def produce():
    fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"1")  # one byte per generation, from any process
    os.close(fd)
    for item in stream_items("one generation for all"):
        await asyncio.sleep(0.1)  # a generation that takes a while: the others must wait, not produce
        yield item

async def main():
    cache = ResultCache(RedisBackend(url, local=SqliteBackend(local / "results.sqlite3"), prefix="sf:"))
    print("ready", flush=True)
    sys.stdin.readline()
    items = [i async for i in cache.stream("same-request", produce)]
    await cache.aclose()
    print(json.dumps({"text": items[-1].text, "cached": items[-1].cached,
                      "chunks": [c.text for c in items[:-1]]}), flush=True)

asyncio.run(main())
"""


@pytest.mark.timeout(120)
def test_eight_processes_one_identical_request_one_generation(server: RedisServer, tmp_path: Path) -> None:
    counter = tmp_path / "generations"
    tests_dir = str(Path(__file__).parent)
    results = run_together(
        [[WORKER, server.url, str(counter), str(tmp_path / f"local{i}"), tests_dir] for i in range(PROCESSES)]
    )
    for _, err in results:
        assert "result cache" not in err, err  # no cache warning (logging's last-resort handler prints them)
    reports = [report for report, _ in results]
    assert counter.read_bytes() == b"1"  # exactly one generation across the 8 processes
    assert {r["text"] for r in reports} == {"one generation for all"}
    assert len({tuple(r["chunks"]) for r in reports}) == 1  # the same chunk boundaries everywhere
    assert sorted(r["cached"] for r in reports) == [False] + [True] * (PROCESSES - 1)
    assert server.client().keys("sf:lock:*") == []


GENERATE = (
    "import json, steadytext_async as st\n"
    "r = st.SteadyText().generate('Shared through Redis', max_new_tokens=6)\n"
    "print(json.dumps([r.text, r.cached, [t for t in r.token_ids]]))\n"
)


@pytest.mark.timeout(240)
def test_two_processes_with_their_own_local_tier_share_one_redis(server: RedisServer, tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        env = {
            **os.environ,
            "STEADYTEXT_DISABLE_CACHE": "0",
            "STEADYTEXT_CACHE_DIR": str(tmp_path / f"host{i}"),  # separate sqlite tiers: only Redis is shared
            "STEADYTEXT_CACHE_URL": server.url,
            "STEADYTEXT_CACHE_PREFIX": "hosts:",
        }
        out = subprocess.run(
            [sys.executable, "-c", GENERATE], env=env, capture_output=True, text=True, timeout=200, check=True
        )
        assert "result cache" not in out.stderr, out.stderr
        runs.append(json.loads(out.stdout))
    assert runs[0][1] is False and runs[1][1] is True
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2] and runs[0][0]
    assert len(server.client().keys("hosts:r:*")) == 1
    assert not (tmp_path / "host0" / "results.sqlite3").exists()  # the local tier was never needed


async def test_nothing_secret_reaches_redis(
    server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from _remote_servers import Action, ScriptedServer, chat_doc

    from steadytext_async import AsyncSteadyText, InvalidRequestError
    from steadytext_async.providers.presets import register_provider, unregister_provider

    api_key = "sk-SENTINEL-redis-5d6e7f"
    url_secret = "baseurl-SENTINEL-pw"
    monkeypatch.setenv("STEADYTEXT_TEST_REDIS_KEY", api_key)
    with ScriptedServer() as srv:
        srv.reset(*[Action("json", body=chat_doc(f"Hello {i}")) for i in range(4)])
        register_provider("redistest", base_url=srv.url, api_key_env="STEADYTEXT_TEST_REDIS_KEY", replace=True)
        creds = srv.url.replace("://", f"://user:{url_secret}@")
        with pytest.raises(InvalidRequestError, match="credentials") as refused:  # never recorded anywhere
            register_provider("redistestcreds", base_url=creds, api_key_env="STEADYTEXT_TEST_REDIS_KEY")
        assert url_secret not in str(refused.value)
        try:
            async with AsyncSteadyText(
                cache_disabled=False, cache_dir=tmp_path / "local", cache_url=server.url, cache_prefix="sec:"
            ) as client:
                first = await client.generate("hi", model="redistest:m1", unsafe_mode=True, max_new_tokens=8)
                again = await client.generate("hi", model="redistest:m1", unsafe_mode=True, max_new_tokens=8)
        finally:
            unregister_provider("redistest")
    assert first.text == again.text == "Hello 0" and again.cached
    r = server.client()
    keys = cast("list[bytes]", r.keys("*"))  # redis-py types replies bytes | str; without decode_responses: bytes
    assert keys and all(k.startswith(b"sec:") for k in keys)
    blobs = b"".join([*keys, *(r.dump(k) or b"" for k in keys)])  # every key and (serialised) value
    import zlib

    values = [cast("bytes | None", r.get(k)) for k in keys if r.type(k) == b"string"]
    plain = b"".join(zlib.decompress(v[45:]) for v in values if v and v.startswith(b"STCR"))  # after the header
    assert plain.count(b"Hello 0") >= 1
    for secret in (api_key, PASSWORD, url_secret):
        assert secret.encode() not in blobs and secret.encode() not in plain
    assert len(r.keys("sec:r:*")) == 1
