"""The host-wide decode-thread budget: flock slots shared by every pool of every process on the host."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import steadytext_async as st
from steadytext_async._engine.budget import HostBudget


def test_slots_are_exclusive_across_processes_and_freed_when_the_holder_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from steadytext_async._engine.budget import HostBudget
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
