"""The host-wide decode-thread budget: flock slots shared by every pool of every process on the host."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from test_batching import warm_batching

import steadytext_async as st
from steadytext_async._worker.parent.budget import HostBudget

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)


def test_slots_are_exclusive_across_processes_and_freed_when_the_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from steadytext_async._worker.parent.budget import HostBudget
                b = HostBudget(Path({str(tmp_path)!r}), 2)
                held = [b.try_acquire(), b.try_acquire()]
                print(sum(t is not None for t in held), flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "2"
        budget = HostBudget(tmp_path, 2)
        assert budget.try_acquire() is None  # both slots are the other process's
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    budget = HostBudget(tmp_path, 2)
    tokens = [budget.try_acquire(), budget.try_acquire()]
    assert all(t is not None for t in tokens)  # the kernel released the dead holder's locks
    assert budget.try_acquire() is None
    for t in tokens:
        assert t is not None
        budget.release(t)
    assert budget.try_acquire() is not None


def test_waiters_are_visible_to_holders(tmp_path: Path) -> None:
    budget = HostBudget(tmp_path, 1)
    assert not budget.others_waiting()
    with budget.waiting():
        assert budget.others_waiting()
    assert not budget.others_waiting()


async def test_two_clients_in_one_process_share_one_budget(tmp_path: Path) -> None:
    """Two clients with threads=2 each on a 2-thread host budget never decode with more than 2 threads."""
    kw = {"workers": 2, "threads": 2, "host_threads": 2, "budget_dir": tmp_path}
    async with st.AsyncSteadyText(**kw) as a, st.AsyncSteadyText(**kw) as b:  # type: ignore[arg-type]
        await asyncio.gather(a.preload(), b.preload())
        pools = [a._local.pool, b._local.pool]
        peaks = {"threads": 0, "tokens": 0}
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                threads = sum(w.threads for p in pools for w in p._active() if w.alive)
                tokens = sum(len(p._budget.tokens) for p in pools)
                peaks["threads"] = max(peaks["threads"], threads)
                peaks["tokens"] = max(peaks["tokens"], tokens)
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*(c.generate(f"Item {i}:", max_new_tokens=12) for i in range(4) for c in (a, b)))
        done.set()
        await sampler
        assert all(r.usage.completion_tokens == 12 for r in results)
        assert pools[0].generations == 4 and pools[1].generations == 4
        assert peaks["tokens"] <= 2
        assert 1 <= peaks["threads"] <= 2
        # both pools hold nothing once idle
        await asyncio.sleep(0.2)
        assert sum(len(p._budget.tokens) for p in pools) == 0


async def test_a_batch_that_started_short_of_threads_takes_them_once_freed(tmp_path: Path) -> None:
    """Requests join a running batch without new tokens, so a batch that began while another process held a core
    would stay on one thread; the pool's watcher takes the freed token (nobody else waits) and re-splits."""
    slots = str(tmp_path / "cores-2")
    code = (
        "import sys; from pathlib import Path; from steadytext_async._worker.parent.budget import HostBudget; "
        f"t = HostBudget(Path({slots!r}), 2).try_acquire(); print(t is not None, flush=True); sys.stdin.readline()"
    )
    outsider = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert outsider.stdout is not None and outsider.stdin is not None
    assert (await outsider.stdout.readline()).strip() == b"True"  # another process holds one of the two cores

    async def until(condition: Callable[[], bool]) -> bool:
        for _ in range(1000):
            if condition():
                return True
            await asyncio.sleep(0.005)  # polling the pool's own state
        return False

    kw = {"workers": 2, "threads": 2, "max_batch": 4, "host_threads": 2, "budget_dir": tmp_path}
    async with st.AsyncSteadyText(**kw) as client:  # type: ignore[arg-type]
        await client.preload()
        await warm_batching(client, 4)  # workers start unbatched until their self-test's verdict
        pool = client._local.pool
        done_before = pool.generations
        prompts = [f"Write a long story about item {i}." for i in range(4)]  # long answers: all 48 tokens
        batch = asyncio.gather(*(client.generate(p, max_new_tokens=48) for p in prompts))
        assert await until(lambda: sum(w.active for w in pool._active()) == 4)
        assert len(pool._budget.tokens) == 1 and [w.threads for w in pool._active()] == [1]  # one core free
        outsider.stdin.write(b"release\n")
        await outsider.wait()  # its lock goes with it
        grown = await until(lambda: [w.threads for w in pool._active()] == [2])
        still_running = pool.generations == done_before
        results = await batch
    assert grown and still_running
    assert pool.peak_batch == 4 and all(r.usage.completion_tokens == 48 for r in results)


async def test_closing_a_client_mid_request_gives_its_host_cores_back(tmp_path: Path) -> None:
    """A pool closed while it holds tokens (a request still decoding) releases them: another process then gets
    every core."""
    kw = {"workers": 1, "threads": 2, "host_threads": 2, "budget_dir": tmp_path}
    client = st.AsyncSteadyText(**kw)  # type: ignore[arg-type]
    await client.preload()
    pool = client._local.pool
    task = asyncio.create_task(client.generate("A long story:", max_new_tokens=400))
    for _ in range(1000):
        if len(pool._budget.tokens) == 2:
            break
        await asyncio.sleep(0.005)  # polling the pool's own state
    assert len(pool._budget.tokens) == 2
    await client.aclose()
    with contextlib.suppress(Exception):
        await task
    assert pool._budget.tokens == []
    code = (
        "from pathlib import Path; from steadytext_async._worker.parent.budget import HostBudget; "
        f"b = HostBudget(Path({str(tmp_path / 'cores-2')!r}), 2); "
        "print(sum(b.try_acquire() is not None for _ in range(2)))"
    )
    other = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=subprocess.PIPE)
    out, _ = await other.communicate()
    assert out.strip() == b"2"
