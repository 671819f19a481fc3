"""Worker pool lifecycle: cancellation, crashes, shutdown, and the thread budget."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import alive
from test_batching import warm_batching

import steadytext_async as st

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

PROMPT = "Once upon a time"


async def _first_piece(stream: object) -> None:
    async for item in stream:  # type: ignore[attr-defined]
        if isinstance(item, st.Chunk) and item.text:
            return


async def test_cancel_frees_the_worker_without_killing_it() -> None:
    async with st.AsyncSteadyText(workers=1, threads=2) as client:
        await client.preload()
        pid = client.worker_pids()[0]
        task = asyncio.create_task(client.generate(PROMPT, max_new_tokens=400))
        await asyncio.sleep(0.5)  # mid-decode
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The single worker must serve the next request; it was told to stop, not killed.
        r = await asyncio.wait_for(client.generate("Hello", max_new_tokens=4), 60)
        assert r.usage.completion_tokens == 4
        assert client.worker_pids() == [pid]
        pool = client._local.pool
        assert pool.generations == 1  # the cancelled one never completed


async def test_breaking_out_of_a_stream_frees_the_worker() -> None:
    async with st.AsyncSteadyText(workers=1, threads=2) as client:
        seen = 0
        async for item in client.stream(PROMPT, max_new_tokens=400):
            if isinstance(item, st.Chunk):
                seen += 1
                if seen == 3:
                    break
        r = await asyncio.wait_for(client.generate("Hello", max_new_tokens=4), 60)
        assert r.usage.completion_tokens == 4
        assert len(client.worker_pids()) == 1


async def test_worker_killed_mid_request_is_replaced_and_request_completes() -> None:
    async with st.AsyncSteadyText(workers=1, threads=2) as ref:
        expected = (await ref.generate(PROMPT, max_new_tokens=60)).text
    async with st.AsyncSteadyText(workers=1, threads=2) as client:
        pieces: list[str] = []
        final = None
        killed = None
        async for item in client.stream(PROMPT, max_new_tokens=60):
            if isinstance(item, st.GenerationResult):
                final = item
                continue
            pieces.append(item.text)
            if killed is None and len(pieces) == 5:
                killed = client.worker_pids()[0]
                os.kill(killed, signal.SIGKILL)
        assert final is not None and killed is not None
        assert "".join(pieces) == final.text == expected  # nothing lost, nothing repeated
        assert killed not in client.worker_pids() and len(client.worker_pids()) == 1
        assert client._local.pool.respawns == 1


async def test_worker_dying_twice_fails_with_typed_error() -> None:
    async with st.AsyncSteadyText(workers=1, threads=2) as client:
        await client.preload()
        killed: set[int] = set()

        async def killer() -> None:
            while len(killed) < 2:
                for pid in client.worker_pids():
                    if pid not in killed:
                        await asyncio.sleep(0.3)
                        killed.add(pid)
                        os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(0.02)

        k = asyncio.create_task(killer())
        with pytest.raises(st.WorkerError, match="died twice"):
            await asyncio.wait_for(client.generate(PROMPT, max_new_tokens=2000 - 100), 120)
        k.cancel()
        # and the pool still works afterwards
        r = await asyncio.wait_for(client.generate("Hello", max_new_tokens=3), 60)
        assert r.usage.completion_tokens == 3


async def test_aclose_leaves_no_child_processes() -> None:
    client = st.AsyncSteadyText(workers=2, threads=2)
    await client.preload()
    pids = client.worker_pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    await client.aclose()
    assert client.worker_pids() == []
    assert not any(alive(p) for p in pids)
    # usable again after aclose
    r = await client.generate("Hi", max_new_tokens=2)
    assert r.usage.completion_tokens == 2
    await client.aclose()


def _script(body: str) -> list[str]:
    return [sys.executable, "-c", "import steadytext_async as st, os, sys, time\n" + body]


def test_interpreter_exit_leaves_no_child_processes() -> None:
    out = subprocess.run(
        _script("st.generate('Hi', max_new_tokens=2)\nprint(*st.default_client().worker_pids())"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    pids = [int(p) for p in out.stdout.split()]
    assert pids
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def test_workers_die_with_a_killed_parent() -> None:
    with subprocess.Popen(
        _script("st.preload_models()\nprint(*st.default_client().worker_pids(), flush=True)\ntime.sleep(600)"),
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(alive(p) for p in pids)
        proc.kill()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def test_llama_cpp_stderr_is_silenced() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "steadytext_async", "generate", "Hello", "--max-new-tokens", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stderr == ""
    assert out.stdout.strip()


async def test_thread_budget_is_never_exceeded_under_load() -> None:
    async with st.AsyncSteadyText(workers=2, threads=2) as client:
        results = await asyncio.gather(*(client.generate(f"Item {i}:", max_new_tokens=6) for i in range(16)))
        assert all(r.usage.completion_tokens == 6 for r in results)
        pool = client._local.pool
        assert pool.peak_threads == 2
        assert pool.generations == 16
        assert len(client.worker_pids()) == 2


async def test_more_workers_than_threads_caps_concurrency() -> None:
    async with st.AsyncSteadyText(workers=3, threads=2) as client:
        assert client._local.pool.max_active == 2
        await asyncio.gather(*(client.generate(f"Item {i}:", max_new_tokens=4) for i in range(6)))
        assert client._local.pool.peak_threads <= 2


async def test_unloadable_model_file_falls_back_or_raises_when_strict(tmp_path: object) -> None:
    import pathlib

    bad = pathlib.Path(str(tmp_path)) / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    async with st.AsyncSteadyText(workers=1, threads=1) as client:
        r = await client.generate("Hello", model=str(bad), max_new_tokens=5)
        assert r.fallback and len(r.text.split()) == 5
        with pytest.raises(st.ModelUnavailableError, match="could not load model"):
            await client.generate("Hello", model=str(bad), max_new_tokens=5, strict=True)


def _worker_children() -> set[int]:
    """Live worker processes whose parent is this test process (counted from /proc, not from the pool's lists)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == os.getpid() and b"steadytext_async._worker.child" in cmdline:
            found.add(int(entry))
    return found


async def test_a_killed_worker_is_replaced_by_the_warm_spare_under_load() -> None:
    """Issue 22 item 5: with ``spare_workers=1`` a SIGKILLed worker's place is taken by the already loaded spare
    (not a fresh start), a new spare starts behind it, and every request under way completes with its bytes."""
    prompts = [f"Item {i}:" for i in range(4)]
    stragglers = _worker_children()  # workers of earlier tests still exiting are not this test's

    def children() -> set[int]:
        return _worker_children() - stragglers

    async with st.AsyncSteadyText(workers=2, threads=2, max_batch=1) as ref:
        expected = [(await ref.generate(p, max_new_tokens=48)).text for p in prompts]
    async with st.AsyncSteadyText(workers=2, threads=2, max_batch=1, spare_workers=1) as client:
        await client.preload()
        pool = client._local.pool
        for _ in range(600):  # the spare loads in the background
            if pool.spare_pids():
                break
            await asyncio.sleep(0.1)
        workers, spare = set(client.worker_pids()), set(pool.spare_pids())
        assert len(workers) == 2 and len(spare) == 1 and children() == workers | spare
        load = [asyncio.create_task(client.generate(p, max_new_tokens=48)) for p in prompts]
        await asyncio.sleep(0.5)
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        for _ in range(200):  # no timing assertion: the pool's own bookkeeping, as soon as the pipe closes
            if victim not in client.worker_pids() and len(client.worker_pids()) == 2:
                break
            await asyncio.sleep(0.05)
        assert set(client.worker_pids()) == (workers - {victim}) | spare  # the spare took the dead worker's place
        got = await asyncio.gather(*load)
        assert [g.text for g in got] == expected
        for _ in range(600):
            if pool.spare_pids():
                break
            await asyncio.sleep(0.1)
        new_spare = set(pool.spare_pids())
        assert len(new_spare) == 1 and not new_spare & (workers | spare)
        assert children() == set(client.worker_pids()) | new_spare and len(children()) == 3
        assert pool.respawns == 1
    assert not children()


async def test_a_worker_killed_while_building_its_wide_context_is_replaced(tmp_path: object) -> None:
    """Issue 22: a worker reports Ready before its wide (max_batch-sequence) context is built, and builds it in a
    thread. Killed during that build, it is replaced like any other worker: the next request gets its bytes, no
    process is left behind, and the new worker widens in turn."""
    stragglers = _worker_children()
    kw = {"workers": 1, "threads": 2, "max_batch": 4, "cache_dir": tmp_path}
    async with st.AsyncSteadyText(**kw) as ref:  # type: ignore[arg-type]
        expected = (await ref.generate(PROMPT, max_new_tokens=24)).text
        await warm_batching(ref, 4)  # the verdict is stored: the next worker builds its wide context at once
    async with st.AsyncSteadyText(**kw) as client:  # type: ignore[arg-type]
        await client.preload()
        pool = client._local.pool
        victim = pool._workers[0]
        assert victim.info.widening and victim.info.max_batch == 1 and "n_seq_max=1," in victim.info.kernel
        os.kill(victim.pid, signal.SIGKILL)
        r = await asyncio.wait_for(client.generate(PROMPT, max_new_tokens=24), 120)
        assert r.text == expected and pool.respawns == 1
        assert not alive(victim.pid) and set(client.worker_pids()) == _worker_children() - stragglers
        for _ in range(600):  # the replacement builds its own wide context and reports it
            if not pool._workers[0].info.widening:
                break
            await asyncio.sleep(0.05)
        info = pool._workers[0].info
        assert not info.widening and "n_seq_max=4," in info.kernel
        assert info.max_batch == (1 if info.selftest_pending else 4)  # batching waits for the self-test too
    assert not (_worker_children() - stragglers)


async def test_a_request_on_a_worker_whose_reader_is_cancelled_is_ended_not_left_waiting() -> None:
    """Regression: ``Pool.aclose`` cancels each worker's pipe reader after the process exits. A reader cancelled
    before it had read the end of the pipe left the requests still streaming from that worker waiting forever (a
    client closed mid-request then hung in ``await``; seen as a 300 s timeout in ``test_budget``)."""
    from steadytext_async._worker.parent.handle import Died, DiedEvent, WorkerHandle

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(30)", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        worker = WorkerHandle(proc, "model.gguf")
        events: asyncio.Queue[object] = asyncio.Queue()
        worker.streams[7] = events  # type: ignore[assignment]
        ack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        worker.acks[1] = ack
        exits: list[WorkerHandle] = []

        async def on_exit(w: WorkerHandle) -> None:
            exits.append(w)

        pump = asyncio.create_task(worker._pump(on_exit, None))
        await asyncio.sleep(0.05)  # the reader is waiting for a frame that never comes
        assert events.empty() and not pump.done()
        pump.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pump
        assert isinstance(events.get_nowait(), DiedEvent)
        assert isinstance(ack.exception(), Died) and not worker.alive
        assert exits == []  # the pool is closing: no replacement is started
    finally:
        proc.kill()
        await proc.wait()
