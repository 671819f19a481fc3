"""Batched decoding is byte-identical to decoding alone: every request, every batch composition.

One in-process worker (the real ``_worker.child.worker.Worker``: self-test, batcher, decoder) with up to 7 sequences,
driven tick by tick so that neighbours can join, finish, or be cancelled at chosen steps. Each request's text,
token ids and logprobs (floats compared exactly) must equal its own alone run, and the greedy texts the goldens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import adopt_verdicts
from test_determinism import GOLDEN

from steadytext_async._worker.child import selftest
from steadytext_async._worker.child.worker import Worker
from steadytext_async._worker.protocol import (
    BatchVerdict,
    Cancel,
    Cancelled,
    DoneFrame,
    ErrorFrame,
    FromWorker,
    Generate,
    GenParams,
    PieceFrame,
    WorkerConfig,
    WorkerInfo,
)
from steadytext_async.structured import normalize

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

B = 7
THREADS = 2  # both cores: the self-tests and prompts here run alone, and bytes do not depend on threads


@dataclasses.dataclass
class Out:
    text: str = ""
    token_ids: list[int] = dataclasses.field(default_factory=list)
    tokens: list[Any] = dataclasses.field(default_factory=list)
    finish: str | None = None


class Harness:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.outs: dict[int, Out] = {}
        self.rid = 0
        self.verdicts: list[int] = []
        self.reports: list[WorkerInfo] = []  # every BatchVerdict's report, in order

    def collect(self, msg: FromWorker) -> None:
        if isinstance(msg, PieceFrame):
            out = self.outs[msg.rid]
            out.text += msg.text
            out.token_ids += msg.token_ids
            out.tokens += msg.tokens or []
        elif isinstance(msg, DoneFrame):
            self.outs[msg.rid].finish = msg.finish_reason
        elif isinstance(msg, Cancelled):
            self.outs[msg.rid].finish = "cancelled"
        elif isinstance(msg, ErrorFrame):
            raise AssertionError(f"request {msg.rid} failed: {msg.error}")
        elif isinstance(msg, BatchVerdict):
            self.reports.append(msg.info)
            if not (msg.info.selftest_pending or msg.info.widening):  # settled: the verdict, in the wide context
                self.verdicts.append(msg.max_batch)

    def run(self, schedule: dict[int, list[GenParams]], cancel: dict[int, list[int]] | None = None) -> list[Out]:
        """Submit ``schedule[t]`` before tick ``t``; cancel request numbers ``cancel[t]`` (submission order)."""
        self.outs.clear()
        rids: list[int] = []
        w = self.worker
        tick = 0
        while tick <= max(schedule) or w.batcher.busy or w.waiting:
            for params in schedule.get(tick, []):
                self.rid += 1
                rids.append(self.rid)
                self.outs[self.rid] = Out()
                w.handle(Generate(self.rid, params))
            for index in (cancel or {}).get(tick, []):
                w.handle(Cancel(rids[index]))
            w.work()
            tick += 1
            assert tick < 2000
        return [self.outs[r] for r in rids]


def _config(model_spec: Any, verdicts: Path, max_batch: int) -> WorkerConfig:
    return WorkerConfig(
        model_path=str(model_spec.path),
        n_ctx=512,
        n_batch=512,
        n_threads=THREADS,
        max_batch=max_batch,
        verdict_path=str(verdicts),
    )


@pytest.fixture(scope="module")
def harness(gemma_spec: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    cfg = _config(gemma_spec, tmp_path_factory.mktemp("verdicts") / "batch-verdicts.json", B)
    box: list[Harness] = []
    worker = Worker(cfg, send=lambda msg: box[0].collect(msg))
    box.append(Harness(worker))
    worker.finish_selftest()
    yield box[0]
    worker.close()


def greedy(prompt: str, n: int = 24, **kw: Any) -> GenParams:
    return GenParams(prompt=prompt, max_new_tokens=n, logprobs=True, top_logprobs=3, **kw)


TARGETS = [greedy(p) for p in ("Once upon a time", "The capital of France is", "def fibonacci(n):")]
NEIGHBOURS = [
    greedy("Write about 🤖 and 人工智能", 30),
    greedy("Line one\nLine two\nLine three", 12),
    greedy("A long prompt about rivers. " * 30, 20),  # ~180 tokens: a longer KV stream next to short ones
    greedy("", 8),
    GenParams(prompt="My favourite colour is", max_new_tokens=8, constraint=normalize(choices=["red", "light blue"])),
    GenParams(prompt="The year was ", max_new_tokens=6, constraint=normalize(regex=r"[0-9]{4}")),
    GenParams(prompt="Once upon a time", max_new_tokens=16, temperature=0.9, seed=7, logprobs=True),
    GenParams(prompt="The weather today", max_new_tokens=10, temperature=1.2, seed=11, stop="."),
]


@pytest.fixture(scope="module")
def alone(harness: Harness) -> dict[int, Out]:
    """Every request decoded by itself."""
    return {id(p): harness.run({0: [p]})[0] for p in TARGETS + NEIGHBOURS}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check(got: list[Out], params: list[GenParams], alone: dict[int, Out]) -> None:
    for out, p in zip(got, params, strict=True):
        assert out == alone[id(p)], p.prompt[:30]


def test_self_test_finds_the_largest_identical_batch_and_caches_it(harness: Harness) -> None:
    w = harness.worker
    assert w.batch_max == B and w.selftest_seconds > 0 and harness.verdicts == [B]
    info = w.info()
    assert info.max_batch == B and info.selftest_pending is False
    assert info.kernel == "flash_attn=0,kv_unified=0,n_seq_max=7,repack=0,tiled_mm=0"
    assert w.cfg.verdict_path is not None
    key = selftest.verdict_key(w.cfg.model_path, w._system_info(), THREADS, B, 512)
    assert selftest.load_verdict(Path(w.cfg.verdict_path), key, B) == B


def test_alone_matches_the_goldens(alone: dict[int, Out]) -> None:
    for p in TARGETS:
        assert sha(alone[id(p)].text) == GOLDEN[p.prompt]
        assert len(alone[id(p)].token_ids) == len(alone[id(p)].tokens) == 24 and alone[id(p)].finish == "length"
    assert alone[id(NEIGHBOURS[4])].text in ("red", "light blue")
    assert alone[id(NEIGHBOURS[4])].finish == "constraint_complete"


@pytest.mark.parametrize("n_neighbours", [1, 3, 6])
def test_neighbours_all_at_once(harness: Harness, alone: dict[int, Out], n_neighbours: int) -> None:
    batch = [TARGETS[n_neighbours % 3], *NEIGHBOURS[:n_neighbours]]
    check(harness.run({0: batch}), batch, alone)


def test_constrained_and_sampled_neighbours(harness: Harness, alone: dict[int, Out]) -> None:
    batch = [*TARGETS, *NEIGHBOURS[4:8]]
    check(harness.run({0: batch}), batch, alone)


def test_neighbours_join_and_leave_mid_generation(harness: Harness, alone: dict[int, Out]) -> None:
    """Target 0 starts alone; others join at steps 3, 5, 9 and 14; short ones finish early; one is cancelled."""
    schedule = {0: [TARGETS[0]], 3: NEIGHBOURS[:2], 5: [TARGETS[1], NEIGHBOURS[3]], 9: NEIGHBOURS[5:7]}
    schedule[14] = [TARGETS[2], NEIGHBOURS[2]]  # more than the free slots: one waits for a slot
    fillers = harness.worker.batcher.fillers
    got = harness.run(schedule, cancel={11: [2]})  # NEIGHBOURS[1] (12 tokens) is cancelled at step 11
    # requests that left early opened gaps in the sequence ids, filled with throwaway tokens: still the same bytes
    assert harness.worker.batcher.fillers > fillers
    order = [p for t in sorted(schedule) for p in schedule[t]]
    cancelled = got[2]
    assert cancelled.finish == "cancelled" and alone[id(order[2])].text.startswith(cancelled.text)
    check(got[:2] + got[3:], order[:2] + order[3:], alone)


def test_more_requests_than_slots_queue_and_still_match(harness: Harness, alone: dict[int, Out]) -> None:
    batch = TARGETS + NEIGHBOURS  # 11 requests, 7 slots
    check(harness.run({0: batch}), batch, alone)


# -- the self-test's bookkeeping (no model) ------------------------------------------------------------------------
def test_compare_reports_each_sequences_first_difference_and_its_batch_size() -> None:
    a, b, c, d = (bytes([i]) * 4 for i in range(4))
    alone = [[a, b, c], [a, b, c], [a, b, c]]
    batched = [[a, b, c], [a, d, d], [a, b, d]]  # seq 1 differs from step 1 on, seq 2 at step 2
    sizes = [[1, 2, 3], [1, 8, 3], [1, 2, 5]]
    assert selftest.compare(alone, batched, sizes) == [(1, 1, 8), (2, 2, 5)]  # verdict: 5 - 1 = 4


def test_verdict_cache_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "v" / "batch-verdicts.json"
    assert selftest.load_verdict(path, "k", 8) is None
    selftest.store_verdict(path, "k", 7)
    selftest.store_verdict(path, "other", 3)
    assert selftest.load_verdict(path, "k", 8) == 7 and selftest.load_verdict(path, "other", 8) == 3
    path.write_text("{not json")
    assert selftest.load_verdict(path, "k", 8) is None
    selftest.store_verdict(path, "k", 5)  # a corrupt file is replaced, not a crash
    assert selftest.load_verdict(path, "k", 8) == 5


@pytest.mark.parametrize("value", [4096, 3, 0, -1, True, 2.0, "2"])
def test_a_verdict_outside_the_tested_range_is_ignored(tmp_path: Path, value: object) -> None:
    """Issue 25 L4: a verdict file saying 4096 was used as is with STEADYTEXT_MAX_BATCH=2."""
    path = tmp_path / "batch-verdicts.json"
    path.write_text(json.dumps({"k": value, "ok": 2}))
    assert selftest.load_verdict(path, "k", 2) is None
    assert selftest.load_verdict(path, "ok", 2) == 2


# -- the self-test runs after Ready, between the worker's own steps (issue 22 item 4, issue 25 M10/L4) --------------
def _worker(model_spec: Any, verdicts: Path, max_batch: int = 4) -> Harness:
    cfg = _config(model_spec, verdicts, max_batch)
    box: list[Harness] = []
    made: list[Worker] = []

    def build() -> None:  # in a thread: a constructor that waits on the lock must fail the test, not hang it
        made.append(Worker(cfg, send=lambda msg: box[0].collect(msg)))

    import threading

    t = threading.Thread(target=build, daemon=True)
    t.start()
    t.join(120)
    assert made, "the worker did not finish starting (waiting for the self-test or its lock?)"
    box.append(Harness(made[0]))
    return box[0]


def _key(h: Harness) -> str:
    w = h.worker
    return selftest.verdict_key(w.cfg.model_path, w._system_info(), THREADS, w.cfg.max_batch, 512)


def test_worker_is_ready_unbatched_then_switches_after_its_self_test(
    gemma_spec: Any, tmp_path: Path, alone: dict[int, Out]
) -> None:
    """No cached verdict: the worker is ready at once, unbatched (one sequence per step), runs the self-test
    between its requests' steps, then batches; every request's bytes equal its alone run either way, and each
    DoneFrame says which batch limit that request ran under."""
    verdicts = tmp_path / "batch-verdicts.json"
    h = _worker(gemma_spec, verdicts, max_batch=2)  # the smallest test that batches
    w = h.worker
    info = w.info()
    assert (w.batch_max, w.selftest_seconds) == (1, 0.0)
    assert info.max_batch == 1 and info.selftest_pending is True and not verdicts.exists()
    # Ready in a one-sequence context; the wide one is built only once the verdict allows a batch (a build beside
    # the self-test's steps made a fresh machine's first request 0.77 s slower)
    assert info.widening is False and w._wide is None and "n_seq_max=1," in info.kernel
    limits: list[float] = []
    widths: list[int] = []
    orig = h.collect

    def collect(msg: FromWorker) -> None:
        if isinstance(msg, DoneFrame):
            limits.append(msg.timings.max_batch)
        orig(msg)

    h.collect = collect  # type: ignore[method-assign]
    batch = [*TARGETS, *NEIGHBOURS[:3]]
    h.outs.clear()
    for p in batch:  # all at once: while the test is pending they queue and run one at a time
        h.rid += 1
        h.outs[h.rid] = Out()
        w.handle(Generate(h.rid, p))
    rids = list(h.outs)
    for _ in range(2000):
        if not (w.batcher.busy or w.waiting):
            break
        w.work()
        widths.append(len(w.batcher.slots) * (1 if h.verdicts else -1))  # negative: before the verdict
    check([h.outs[r] for r in rids], batch, alone)
    assert h.verdicts == [2] and w.batch_max == 2 and w.selftest_seconds > 0, h.reports
    assert min(widths) == -1 and max(widths) > 1  # one at a time before the verdict, several after
    assert limits[0] == 1.0 and limits[-1] == 2.0
    assert selftest.load_verdict(verdicts, _key(h), 2) == 2
    assert w.info().selftest_pending is False
    w.close()


def test_ready_with_one_sequence_then_batches_in_its_wide_context(
    gemma_spec: Any, tmp_path: Path, harness: Harness, alone: dict[int, Out], held_builds: threading.Event
) -> None:
    """Issue 22: Ready came only after a context of max_batch x n_ctx KV cells was made and cleared (most of a fresh
    preload). Now, with a cached verdict: Ready with one sequence's context, serving one request at a time; the wide
    context is built beside it; a request in flight when it arrives moves over (its KV cells copied) and every
    request's bytes equal its alone run; then requests batch, and the pool hears of it once."""
    verdicts = tmp_path / "batch-verdicts.json"
    selftest.store_verdict(
        verdicts, selftest.verdict_key(str(gemma_spec.path), harness.worker._system_info(), THREADS, 4, 512), 4
    )
    h = _worker(gemma_spec, verdicts)
    w = h.worker
    info = w.info()
    assert (info.max_batch, info.selftest_pending, info.widening) == (1, False, True)
    assert info.kernel == "flash_attn=0,kv_unified=0,n_seq_max=1,repack=0,tiled_mm=0" and w.model.n_seq == 1
    finished_in: dict[int, tuple[str | None, int]] = {}
    orig = h.collect

    def collect(msg: FromWorker) -> None:
        if isinstance(msg, DoneFrame):
            finished_in[msg.rid] = (msg.timings.kernel, msg.timings.max_batch)
        orig(msg)

    h.collect = collect  # type: ignore[method-assign]
    batch = [TARGETS[0], NEIGHBOURS[0], TARGETS[1], NEIGHBOURS[2]]
    h.outs.clear()
    rids = []
    for p in batch[:2]:
        h.rid += 1
        rids.append(h.rid)
        h.outs[h.rid] = Out()
        w.handle(Generate(h.rid, p))
    for _ in range(6):  # the first is a few tokens in, alone; the second waits for the one slot
        w.work()
    first = w.batcher.slots[rids[0]]
    assert first.next_token is not None and len(first.decoder.ids) >= 4 and len(w.waiting) == 1
    assert w.model.n_seq == 1 and h.reports == []
    held_builds.set()
    assert w._wide is not None
    w._wide.wait()
    for p in batch[2:]:
        h.rid += 1
        rids.append(h.rid)
        h.outs[h.rid] = Out()
        w.handle(Generate(h.rid, p))
    widths = []
    while w.batcher.busy or w.waiting:
        w.work()
        widths.append(len(w.batcher.slots))
    check([h.outs[r] for r in rids], batch, alone)
    assert max(widths) == 4 and w.model.n_seq == 4 and w.batch_max == 4
    assert [(r.max_batch, r.widening, r.selftest_pending) for r in h.reports] == [(4, False, False)]
    assert h.reports[0].kernel == "flash_attn=0,kv_unified=0,n_seq_max=4,repack=0,tiled_mm=0"
    assert all(finished_in[r] == (h.reports[0].kernel, 4) for r in rids)  # the first moved, then finished there
    w.close()


def test_a_held_verdict_lock_never_blocks_a_worker(
    gemma_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 25 M10: whoever held the lock turned every new worker into fallback text (the wait had no timeout
    and counted against the start deadline). Now: ready at once and serving unbatched while another holds the
    lock; the other's verdict is taken as soon as it is stored; a lock held past the patience is ignored."""
    from filelock import FileLock

    verdicts = tmp_path / "batch-verdicts.json"
    lock = FileLock(str(verdicts) + ".lock")
    lock.acquire()
    try:
        h = _worker(gemma_spec, verdicts)
        w = h.worker
        out = h.run({0: [TARGETS[0]]})[0]
        assert out.finish == "length" and w.batch_max == 1 and h.verdicts == []
        assert w.info().selftest_pending is True and not verdicts.exists()  # it never ran the test meanwhile
        selftest.store_verdict(verdicts, _key(h), 3)  # the lock holder's verdict
        w.finish_selftest()
        assert h.verdicts == [3] and w.batch_max == 3 and w.selftest_seconds == 0.0
        w.close()

        monkeypatch.setattr(selftest, "LOCK_PATIENCE", 0.3)
        h2 = _worker(gemma_spec, tmp_path / "other" / "batch-verdicts.json", max_batch=2)
        lock2 = FileLock(str(tmp_path / "other" / "batch-verdicts.json") + ".lock")
        lock2.acquire()  # a stopped process holds it
        try:
            h2.worker.finish_selftest()  # waits out the patience, then tests unlocked
        finally:
            lock2.release()
        assert h2.verdicts == [2] and h2.worker.selftest_seconds > 0
        h2.worker.close()
    finally:
        lock.release()


def test_an_idle_worker_hands_the_verdict_lock_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that took the self-test lock while serving and then went idle held it until it exited: every other
    worker with the same key stayed unbatched for the lock's patience (120 s; seen in CI as "no batching verdict
    after 80 rounds"). Now a worker idle for a second pauses its test: the lock is free, the other worker tests and
    stores the verdict, and the paused one takes it from the file without finishing its own."""
    from filelock import FileLock, Timeout

    steps_run: list[str] = []

    def steps(model: Any, limit: int) -> Generator[None, None, int]:
        for _ in range(3):
            steps_run.append(model)
            yield
        return 4

    class _Model:
        def __init__(self, name: str) -> None:
            self.name = name

        def set_threads(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(selftest, "verdict_steps", steps)
    verdicts = tmp_path / "batch-verdicts.json"
    now = [0.0]
    first = selftest.PendingVerdict(lambda k: _Model("first"), 4, path=verdicts, key="k", clock=lambda: now[0])  # type: ignore[arg-type,return-value]
    second = selftest.PendingVerdict(lambda k: _Model("second"), 4, path=verdicts, key="k")  # type: ignore[arg-type,return-value]
    assert first.step(1) is None and first.state == "running"  # it holds the lock, one step in
    with pytest.raises(Timeout):
        FileLock(str(verdicts) + ".lock").acquire(timeout=0)
    first.pause()  # a short gap between requests: it keeps the lock (else two workers take turns testing)
    assert first.state == "running"
    now[0] += selftest.IDLE_GRACE  # idle for the grace period
    first.pause()
    assert first.state == "waiting"
    FileLock(str(verdicts) + ".lock").acquire(timeout=0).lock.release()  # free at once
    while second.verdict is None:
        second.step(1)
    assert second.verdict == 4 and selftest.load_verdict(verdicts, "k", 4) == 4
    assert first.poll() == 4 and first.state == "done" and len(steps_run) == 4  # first ran one step, second three


def test_an_out_of_range_cached_verdict_is_not_used(gemma_spec: Any, tmp_path: Path) -> None:
    """Issue 25 L4: 4096 in the verdict file was used with max_batch=2; now it is ignored and the test runs."""
    verdicts = tmp_path / "batch-verdicts.json"
    probe = _worker(gemma_spec, tmp_path / "probe.json", max_batch=2)
    key = _key(probe)
    probe.worker.close()
    selftest.store_verdict(verdicts, key, 4096)
    h = _worker(gemma_spec, verdicts, max_batch=2)
    assert h.worker.batch_max == 1 and h.worker.info().selftest_pending is True
    h.worker.finish_selftest()
    assert h.verdicts == [2] and h.worker.batcher.per_call == 2 and len(h.worker.batcher.free) == 2
    assert selftest.load_verdict(verdicts, key, 2) == 2
    h.worker.close()


# -- through the pool ----------------------------------------------------------------------------------------------
async def test_pool_batches_requests_in_one_worker_with_identical_bytes(tmp_path: Path) -> None:
    import asyncio

    import steadytext_async as st

    prompts = [f"Fact number {i}:" for i in range(6)]
    async with st.AsyncSteadyText(workers=1, threads=THREADS, max_batch=1, cache_dir=tmp_path) as solo:
        expected = [await solo.generate(p, max_new_tokens=12, return_logprobs=True) for p in prompts]
    async with st.AsyncSteadyText(workers=1, threads=THREADS, max_batch=4, cache_dir=tmp_path) as client:
        # a fresh cache: the first request is served unbatched at once, while the self-test runs beside it
        first = await client.generate(prompts[0], max_new_tokens=12, return_logprobs=True)
        pool = client._local.pool
        assert first.fingerprint.max_batch == 1 and pool._workers[0].info.selftest_seconds == 0
        await warm_batching(client, 4)
        got = await asyncio.gather(*(client.generate(p, max_new_tokens=12, return_logprobs=True) for p in prompts))
        assert len(pool.pids()) == 1 and pool.peak_batch == 4  # six requests, one worker, four decoding at once
    adopt_verdicts(tmp_path / "batch-verdicts.json")  # the dispatch test below has this pool shape
    assert (first.text, first.token_ids, first.logprobs) == (
        expected[0].text,
        expected[0].token_ids,
        expected[0].logprobs,
    )
    for e, g in zip(expected, got, strict=True):
        assert (g.text, g.token_ids, g.logprobs) == (e.text, e.token_ids, e.logprobs)
        assert g.fingerprint.max_batch == 4 and e.fingerprint.max_batch == 1
        assert g.fingerprint.kernel is not None and "tiled_mm=0" in g.fingerprint.kernel


async def warm_batching(client: Any, want: int, rounds: int = 80) -> None:
    """Send small requests until every worker of the client's pool reports batch size ``want`` (a worker runs its
    self-test only while it decodes requests)."""
    import asyncio

    pool = client._local.pool
    for i in range(rounds):
        workers = [w for w in pool._workers if w.alive]
        if workers and all(w.capacity == want for w in workers):
            # a worker leaves its last warm-up request a moment after the caller has the result: wait for that, so
            # the test's own requests find every worker idle (a worker widens only after Ready, so warm-up requests
            # run even with a cached verdict)
            for _ in range(200):
                if not any(w.busy for w in workers):
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"workers still busy after the warm-up: {[w.active for w in workers]}")
        n = max(1, len(workers))
        # a request that asks for a long answer decodes all 16 tokens (a short chat answer ends at once)
        warm = [client.generate(f"Write a long story about the number {i}{j}.", max_new_tokens=16) for j in range(n)]
        await asyncio.gather(*warm)
    raise AssertionError(f"no batching verdict after {rounds} rounds: {[w.info for w in pool._workers]}")


# -- the shape of each step (no model) -----------------------------------------------------------------------------
class _StepRecorder:
    """Just enough of ``LlamaModel`` for the batcher: every step's sequence ids (requests, fillers) are recorded."""

    n_seq = 6
    n_batch = 64
    kernel = "n_seq_max=6"

    def __init__(self) -> None:
        self.steps: list[tuple[list[int], list[int], list[int]]] = []
        self.batcher: Any = None

    def set_threads(self, n: int) -> None:
        pass

    def clear(self, seq: int) -> None:
        pass

    def prefill(self, seq: int, tokens: list[int], start: int = 0) -> Any:
        import numpy as np

        return np.zeros(4, dtype=np.float32)

    def step(self, entries: list[tuple[int, int]], pad: list[int] = ()) -> Any:  # type: ignore[assignment]
        import numpy as np

        prefilling = [s.seq for s in self.batcher.slots.values() if s.next_token is None]
        self.steps.append(([seq for seq, _ in entries], list(pad), prefilling))
        return np.zeros((len(entries), 4), dtype=np.float32)

    def piece(self, token: int) -> bytes:
        return b"x"

    def is_end(self, token: int) -> bool:
        return False


def test_every_step_has_contiguous_ascending_sequence_ids() -> None:
    """llama.cpp splits a step at each gap or inversion of sequence ids into separately costed micro-batches (8
    sequences in reverse order ran 2.4x slower): the batcher keeps ids ascending and fills gaps left by requests
    that finished early."""
    from steadytext_async._worker.child.batch import Batcher
    from steadytext_async._worker.child.decode import SequenceDecoder
    from steadytext_async._worker.child.sampling import Sampler

    model = _StepRecorder()
    batcher = model.batcher = Batcher(model, slots=6, per_call=6, threads=1, send=lambda msg: None)  # type: ignore[arg-type]
    lengths = {1: 20, 2: 3, 3: 12, 4: 5, 5: 20, 6: 8, 7: 16, 8: 2}  # rid -> tokens: early finishers leave gaps
    pending = sorted(lengths)
    while pending or batcher.busy:
        while pending and batcher.capacity:
            rid = pending.pop(0)
            sampler = Sampler(temperature=0.0, seed=0, top_k=0, top_p=1.0, min_p=0.0)
            batcher.admit(rid, [1, 2], 0, SequenceDecoder(model, max_new_tokens=lengths[rid], sampler=sampler))
        batcher.tick()
    assert len(model.steps) > 20 and batcher.fillers > 0
    split = 0
    for seqs, pad, prefilling in model.steps:
        assert seqs == sorted(seqs)
        gaps = set(range(min(seqs), max(seqs) + 1)) - set(seqs)
        if pad:  # every gap filled, with free sequences only
            assert set(pad) == gaps and not gaps & set(prefilling), (seqs, pad, prefilling)
        else:  # a gap is left only where a request is still evaluating its prompt (its KV must not be touched)
            assert not gaps or gaps & set(prefilling), (seqs, prefilling)
            split += bool(gaps)
    assert split < len(model.steps) // 4


async def test_workers_starting_together_run_one_self_test(tmp_path: Path) -> None:
    """A pool's preload starts its workers at once: one runs the self-test, the others serve unbatched meanwhile
    and take its verdict (the lock passes on only when its holder idles, see below)."""
    import steadytext_async as st

    async with st.AsyncSteadyText(workers=2, threads=2, max_batch=2, cache_dir=tmp_path) as client:
        await client.preload()
        ready = [w.info for w in client._local.pool._workers]  # ready without the test: unbatched
        await warm_batching(client, 2)
        infos = [w.info for w in client._local.pool._workers]
    assert [(i.max_batch, i.selftest_pending) for i in ready] == [(1, True), (1, True)]
    assert len(infos) == 2 and all(i.max_batch == 2 for i in infos)
    # One worker runs the test. A holder idle for IDLE_GRACE hands the lock over, so on a loaded machine (seen under
    # pytest-xdist) the other may run part of a test of its own before the first verdict lands: one verdict either way.
    assert any(i.selftest_seconds > 0 for i in infos)
    verdicts = json.loads((tmp_path / "batch-verdicts.json").read_text())
    assert len(verdicts) == 1
    key = next(iter(verdicts))
    assert selftest.load_verdict(tmp_path / "batch-verdicts.json", key, 2) == 2


@pytest.mark.shared_verdicts  # about where requests go, not the self-test: one verdict per pool shape and session
async def test_new_requests_batch_first_then_spread(tmp_path: Path) -> None:
    """Two warm workers, six requests at once: four join the first worker's batch before the fifth goes to the
    second worker (one worker with both threads decoding a batch beat two 1-thread workers on 2 cores)."""
    import asyncio

    import steadytext_async as st

    prompts = [f"Fact number {i}:" for i in range(6)]
    own_budget = {"host_threads": 2, "budget_dir": tmp_path / "budget"}  # no other pool holds a core meanwhile
    kw = {"workers": 2, "threads": 2, "max_batch": 4, "cache_dir": tmp_path, **own_budget}
    async with st.AsyncSteadyText(dispatch="batch", **kw) as client:  # type: ignore[arg-type]
        await client.preload()
        pool = client._local.pool
        await warm_batching(client, 4)
        assert len(pool.pids()) == 2
        pool.peak_batch, warmed = 0, pool.generations
        got = await asyncio.gather(*(client.generate(p, max_new_tokens=12) for p in prompts))
        assert pool.peak_batch == 4 and pool.peak_threads == 2 and pool.generations == warmed + 6
        alone = [await client.generate(p, max_new_tokens=12) for p in prompts]
    assert [g.text for g in got] == [a.text for a in alone]
    # spread first: the second request starts on the idle worker, the rest join the less loaded batch (3 + 3)
    async with st.AsyncSteadyText(dispatch="spread", **kw) as client:  # type: ignore[arg-type]
        await client.preload()
        pool = client._local.pool
        await warm_batching(client, 4)
        pool.peak_batch = 0
        spread = await asyncio.gather(*(client.generate(p, max_new_tokens=12) for p in prompts))
        assert pool.peak_batch == 3 and pool.peak_threads == 2
    assert [g.text for g in spread] == [a.text for a in alone]
