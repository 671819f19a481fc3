"""Batched decoding is byte-identical to decoding alone: every request, every batch composition.

One in-process worker (the real ``_worker.child.Worker``: self-test, batcher, decoder) with up to 7 sequences,
driven tick by tick so that neighbours can join, finish, or be cancelled at chosen steps. Each request's text,
token ids and logprobs (floats compared exactly) must equal its own alone run, and the greedy texts the goldens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_determinism import GOLDEN

from steadytext_async._worker import selftest
from steadytext_async._worker.child import Worker
from steadytext_async._worker.protocol import (
    Cancel,
    Cancelled,
    DoneFrame,
    ErrorFrame,
    FromWorker,
    Generate,
    GenParams,
    PieceFrame,
    WorkerConfig,
)
from steadytext_async.structured import normalize

B = 7


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
            raise AssertionError(f"request {msg.rid} failed: {msg.kind}: {msg.message}")

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


@pytest.fixture(scope="module")
def harness(model_spec: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    verdicts = tmp_path_factory.mktemp("verdicts") / "batch-verdicts.json"
    cfg = WorkerConfig(
        model_path=str(model_spec.path), n_ctx=512, n_batch=512, n_threads=1, max_batch=B, verdict_path=str(verdicts)
    )
    box: list[Harness] = []
    worker = Worker(cfg, send=lambda msg: box[0].collect(msg))
    box.append(Harness(worker))
    yield box[0]
    worker.model.close()


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
    assert w.batch_max == B and w.selftest_seconds > 0
    info = w.info()
    assert info["max_batch"] == B
    assert info["kernel"] == "flash_attn=0,kv_unified=0,n_seq_max=7,repack=0,tiled_mm=0"
    assert w.cfg.verdict_path is not None
    key = selftest.verdict_key(w.cfg.model_path, w._system_info(), 1, B, 512)
    assert selftest.load_verdict(Path(w.cfg.verdict_path), key) == B


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
    assert selftest.load_verdict(path, "k") is None
    selftest.store_verdict(path, "k", 7)
    selftest.store_verdict(path, "other", 3)
    assert selftest.load_verdict(path, "k") == 7 and selftest.load_verdict(path, "other") == 3
    path.write_text("{not json")
    assert selftest.load_verdict(path, "k") is None
    selftest.store_verdict(path, "k", 5)  # a corrupt file is replaced, not a crash
    assert selftest.load_verdict(path, "k") == 5


# -- through the pool ----------------------------------------------------------------------------------------------
async def test_pool_batches_requests_in_one_worker_with_identical_bytes(tmp_path: Path) -> None:
    import asyncio

    import steadytext_async as st

    prompts = [f"Fact number {i}:" for i in range(6)]
    async with st.AsyncSteadyText(workers=1, threads=1, max_batch=1, cache_dir=tmp_path) as solo:
        expected = [await solo.generate(p, max_new_tokens=12, return_logprobs=True) for p in prompts]
    async with st.AsyncSteadyText(workers=1, threads=1, max_batch=4, cache_dir=tmp_path) as client:
        got = await asyncio.gather(*(client.generate(p, max_new_tokens=12, return_logprobs=True) for p in prompts))
        pool = client._local.pool
        assert len(pool.pids()) == 1 and pool.peak_batch == 4  # six requests, one worker, four decoding at once
    for e, g in zip(expected, got, strict=True):
        assert (g.text, g.token_ids, g.logprobs) == (e.text, e.token_ids, e.logprobs)
        assert g.fingerprint.max_batch == 4 and e.fingerprint.max_batch == 1
        assert g.fingerprint.kernel is not None and "tiled_mm=0" in g.fingerprint.kernel


# -- the shape of each step (no model) -----------------------------------------------------------------------------
class _StepRecorder:
    """Just enough of ``LlamaModel`` for the batcher: every step's sequence ids (requests, fillers) are recorded."""

    n_seq = 6
    n_batch = 64

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
    from steadytext_async._worker.batch import Batcher
    from steadytext_async._worker.decode import SequenceDecoder
    from steadytext_async._worker.sampling import Sampler

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
    """A pool's preload starts its workers at once: one runs the self-test, the others wait for its verdict."""
    import steadytext_async as st

    async with st.AsyncSteadyText(workers=2, threads=2, max_batch=4, cache_dir=tmp_path) as client:
        await client.preload()
        infos = [w.info for w in client._local.pool._workers]
    assert len(infos) == 2 and all(i["max_batch"] == 4 for i in infos)
    assert sorted(i["selftest_seconds"] > 0 for i in infos) == [False, True]
    key = next(iter(json.loads((tmp_path / "batch-verdicts.json").read_text())))
    assert selftest.load_verdict(tmp_path / "batch-verdicts.json", key) == 4


async def test_new_requests_batch_first_then_spread(tmp_path: Path) -> None:
    """Two warm workers, six requests at once: four join the first worker's batch before the fifth goes to the
    second worker (one worker with both threads decoding a batch beat two 1-thread workers on 2 cores)."""
    import asyncio

    import steadytext_async as st

    prompts = [f"Fact number {i}:" for i in range(6)]
    own_budget = {"host_threads": 2, "budget_dir": tmp_path / "budget"}  # no other pool holds a core meanwhile
    async with st.AsyncSteadyText(workers=2, threads=2, max_batch=4, cache_dir=tmp_path, **own_budget) as client:  # type: ignore[arg-type]
        await client.preload()
        pool = client._local.pool
        assert len(pool.pids()) == 2 and pool.peak_batch == 0
        got = await asyncio.gather(*(client.generate(p, max_new_tokens=12) for p in prompts))
        assert pool.peak_batch == 4 and pool.peak_threads == 2 and pool.generations == 6
        alone = [await client.generate(p, max_new_tokens=12) for p in prompts]
    assert [g.text for g in got] == [a.text for a in alone]
