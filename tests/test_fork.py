"""Fork safety: a child of a process that already generated builds its own engine; the parent keeps working.

This is what ``multiprocessing``'s default start method on Linux and ``gunicorn --preload`` do. Every result must be
right, nothing wrong may reach the cache, and nothing may hang (each child is bounded by a timeout).
"""

from __future__ import annotations

import asyncio
import faulthandler
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import alive

import steadytext_async as st
from steadytext_async._cache.codec import decode_entry

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "Water boils at"]
N = 8


def _expected() -> dict[str, str]:
    return {p: st.generate(p, max_new_tokens=N) for p in PROMPTS}


CHILD_LIMIT = 200.0  # seconds a forked child may run before its watchdog prints every thread's stack and exits it


def _run_children(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], during: Callable[[], None]
) -> list[Any]:
    """Fork one ``multiprocessing`` child per ``args`` running ``target(*a, queue)``, call ``during()`` meanwhile, and
    return what each put on the queue. Each child runs under a watchdog, and whatever still runs when this returns or
    raises is killed: a hung child must fail its test, not hang the run (the interpreter's exit joins it)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_watched, args=(target, *a, queue)) for a in args]
    try:
        for proc in procs:
            proc.start()
        during()
        deadline = time.monotonic() + CHILD_LIMIT + 30
        results = [queue.get(timeout=max(1.0, deadline - time.monotonic())) for _ in procs]
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0, (proc.pid, proc.exitcode)
        return results
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _watched(target: Callable[..., None], *args: Any) -> None:
    faulthandler.dump_traceback_later(CHILD_LIMIT, exit=True)  # a hang prints where every thread is, then exits
    target(*args)


def _child_generate(prompt: str, queue: Any) -> None:
    """Runs in a forked child: the module API and a fresh client, sync and async."""
    try:
        text = str(st.generate(prompt, max_new_tokens=N))

        async def main() -> tuple[str, list[int]]:
            async with st.AsyncSteadyText(workers=1, threads=1) as client:
                r = await client.generate(prompt, max_new_tokens=N)
                return r.text, client.worker_pids()

        text2, pids = asyncio.run(main())
        queue.put((prompt, text, text2, os.getpid(), st.default_client().worker_pids(), pids))
    except BaseException as exc:  # reported to the parent, which fails the test
        queue.put((prompt, repr(exc), "", os.getpid(), [], []))


def test_multiprocessing_fork_after_generating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _expected()  # the parent has generated: its pool, pipes and request ids exist now
    parent_pids = st.default_client().worker_pids()
    assert parent_pids

    def parent_generates() -> None:  # the parent keeps generating while its children do
        assert {p: st.generate(p, max_new_tokens=N) for p in PROMPTS} == expected

    results = _run_children(_child_generate, [(p,) for p in PROMPTS[:2]], parent_generates)
    for prompt, text, text2, _pid, default_pids, client_pids in results:
        assert text == expected[prompt], (prompt, text)
        assert text2 == expected[prompt], (prompt, text2)
        # the child ran its own workers, never the parent's
        assert default_pids and not set(default_pids) & set(parent_pids)
        assert not set(client_pids) & set(parent_pids)
    assert st.default_client().worker_pids() == parent_pids  # the parent's pool is intact
    assert all(alive(p) for p in parent_pids)


def _cache_texts(cache_dir: Path) -> list[str]:
    con = sqlite3.connect(cache_dir / "results.sqlite3")
    try:
        rows = con.execute("SELECT value FROM entries").fetchall()
    finally:
        con.close()
    return [decode_entry(bytes(row[0])).result.text for row in rows]


def _fork_worker_with_cache(cache_dir: str, prompt: str, queue: Any) -> None:
    try:

        async def main() -> str:
            async with st.AsyncSteadyText(cache_dir=Path(cache_dir), cache_disabled=False, workers=1, threads=1) as c:
                return (await c.generate(prompt, max_new_tokens=N)).text

        queue.put((prompt, asyncio.run(main())))
    except BaseException as exc:
        queue.put((prompt, repr(exc)))


def test_preload_then_fork_server_pattern_keeps_the_cache_right(tmp_path: Path) -> None:
    """gunicorn --preload: the parent warms a cached client, then forks workers that serve concurrently."""
    expected = _expected()

    async def warm() -> st.AsyncSteadyText:
        client = st.AsyncSteadyText(cache_dir=tmp_path, cache_disabled=False, workers=1, threads=1)
        assert (await client.generate(PROMPTS[0], max_new_tokens=N)).text == expected[PROMPTS[0]]
        return client

    parent_client = asyncio.run(warm())
    results = dict(_run_children(_fork_worker_with_cache, [(str(tmp_path), p) for p in PROMPTS], lambda: None))

    async def again() -> str:
        r = await parent_client.generate(PROMPTS[1], max_new_tokens=N)
        await parent_client.aclose()
        return r.text

    assert asyncio.run(again()) == expected[PROMPTS[1]]
    assert results == expected
    # Every child's entry is stored and right, and the parent's own survived its children. Before the fork gate held
    # whole transactions, children forked while the parent's first write was open lost every write after waiting
    # out two busy timeouts each (this test took 19 s instead of 5).
    assert sorted(_cache_texts(tmp_path)) == sorted(expected.values())
