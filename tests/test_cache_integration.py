"""The cache through the public API: hits, replayed streams, single-flight, what is never stored.

These run on a MockProvider (no model workers): the cache behaviour is the client's, whatever the provider. One
test keeps the embedded model, for the local path (engine crossing, model sha256 in the key).
"""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import mock_text

import steadytext_async as st

PROMPT = "The capital of France is"
MOCK = "mock:m"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def client(cache_dir: Path, mock: st.MockProvider | None = None, **kw: Any) -> st.AsyncSteadyText:
    providers = {"mock": mock} if mock is not None else None
    return st.AsyncSteadyText(cache_disabled=False, cache_dir=cache_dir, providers=providers, **kw)


async def test_hit_is_identical_and_marked_cached(cache_dir: Path) -> None:
    mock = st.MockProvider()
    async with client(cache_dir, mock) as c:
        miss = await c.generate(PROMPT, model=MOCK, max_new_tokens=12, return_logprobs=True)
        hit = await c.generate(PROMPT, model=MOCK, max_new_tokens=12, return_logprobs=True)
        assert not miss.cached and hit.cached and miss.text == mock_text(PROMPT, 12)
        assert hit.text == miss.text and hit.logprobs == miss.logprobs and hit.token_ids == miss.token_ids
        assert hit.logprobs is not None and len(hit.logprobs) == 12
        assert hit.fingerprint == miss.fingerprint
        assert len(mock.requests) == 1
        other = await c.generate(PROMPT, model=MOCK, max_new_tokens=12, seed=7, temperature=0.5)  # another key
        assert not other.cached and len(mock.requests) == 2
        assert other.text == mock_text(PROMPT, 12, sampling=st.SamplingParams(seed=7, temperature=0.5))


@pytest.mark.model
async def test_local_model_hit_is_identical(cache_dir: Path) -> None:
    async with client(cache_dir, workers=1, threads=2) as c:
        miss = await c.generate(PROMPT, max_new_tokens=4)
        hit = await c.generate(PROMPT, max_new_tokens=4)
        assert not miss.cached and hit.cached and hit.text == miss.text and hit.token_ids == miss.token_ids
        assert hit.fingerprint == miss.fingerprint and c._local.pool.generations == 1


async def test_stream_hit_replays_the_live_token_sequence(cache_dir: Path) -> None:
    mock = st.MockProvider()
    async with client(cache_dir, mock) as c:
        live = [i async for i in c.stream(PROMPT, model=MOCK, max_new_tokens=16)]
        replay = [i async for i in c.stream(PROMPT, model=MOCK, max_new_tokens=16)]
        assert isinstance(replay[-1], st.GenerationResult) and replay[-1].cached
        assert len(live) == 17  # one chunk per mock token, then the result
        assert [(x.text, x.token_ids) for x in live[:-1]] == [(x.text, x.token_ids) for x in replay[:-1]]
        assert len(mock.requests) == 1


async def test_single_flight_sixteen_identical_requests_one_generation(cache_dir: Path) -> None:
    mock = st.MockProvider(delay=0.02)
    async with client(cache_dir, mock) as c:
        tasks = [asyncio.create_task(c.generate("Single flight", model=MOCK, max_new_tokens=24)) for _ in range(16)]
        await asyncio.sleep(0.1)
        tasks[0].cancel()  # one waiter leaving does not cancel the generation for the others
        results = await asyncio.gather(*tasks[1:])
        assert {r.text for r in results} == {mock_text("Single flight", 24)}
        assert len(mock.requests) == 1
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]


async def test_cancelled_stream_is_not_stored(cache_dir: Path) -> None:
    mock = st.MockProvider(delay=0.005)
    async with client(cache_dir, mock) as c:
        async for item in c.stream(PROMPT, model=MOCK, max_new_tokens=60):
            if isinstance(item, st.Chunk):
                break
        r = await c.generate(PROMPT, model=MOCK, max_new_tokens=60)
        assert not r.cached and len(mock.requests) == 2


async def test_fallback_is_never_cached(cache_dir: Path) -> None:
    async with client(cache_dir) as c:
        a = await c.generate("x", size="small", max_new_tokens=3)
        b = await c.generate("x", size="small", max_new_tokens=3)
        assert a.fallback and b.fallback and not b.cached
        assert c._cache is not None and (await c._cache.stats()).entries == 0


def test_other_processes_see_the_entries(cache_dir: Path) -> None:
    env = {**os.environ, "STEADYTEXT_DISABLE_CACHE": "0", "STEADYTEXT_CACHE_DIR": str(cache_dir)}
    code = (
        "import json, steadytext_async as st\n"
        "with st.SteadyText(providers={'mock': st.MockProvider()}) as c:\n"
        "    r = c.generate('Across processes', model='mock:m', max_new_tokens=6)\n"
        "print(json.dumps([r.text, r.cached]))\n"
    )
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    assert runs[0] == [mock_text("Across processes", 6), False] and runs[1] == [runs[0][0], True]
    cli = [sys.executable, "-m", "steadytext_async", "cache"]
    stats = subprocess.run([*cli, "stats"], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    data = json.loads(stats)
    assert data["entries"] == 1 and data["hits"] == 1 and data["misses"] == 1 and data["hit_ratio"] == 0.5
    path = subprocess.run([*cli, "path"], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(path)["path"] == str(cache_dir / "results.sqlite3")
    subprocess.run([*cli, "clear"], env=env, capture_output=True, text=True, timeout=60, check=True)
    again = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
        ).stdout
    )
    assert again == [runs[0][0], False]


async def test_the_cache_key_is_computed_once_per_request(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from steadytext_async import _router
    from steadytext_async._cache.key import cache_key

    calls: list[str] = []

    def counting(*args: object, **kwargs: object) -> str:
        calls.append(cache_key(*args, **kwargs))  # type: ignore[arg-type]
        return calls[-1]

    monkeypatch.setattr(_router, "cache_key", counting)
    async with client(cache_dir, st.MockProvider()) as c:
        first = await c.generate(PROMPT, model=MOCK, max_new_tokens=3)  # miss: routed (and keyed) once, for the peek
        assert len(calls) == 1 and first.fingerprint.inputs_sha256 == calls[0]
        items = [i async for i in c.stream("other", model=MOCK, max_new_tokens=3)]  # miss, spec known: peek key
        assert len(calls) == 2 and items[-1].fingerprint.inputs_sha256 == calls[1]  # type: ignore[union-attr]
        hit = await c.generate(PROMPT, model=MOCK, max_new_tokens=3)
        assert hit.cached and len(calls) == 3 and calls[2] == calls[0]
