"""Prompt-prefix reuse changes no byte: text, token ids and logprobs (floats compared exactly) with reuse on equal
reuse off, across batch compositions, stream and whole, message lists and raw prompts, sampled and constrained
requests; the kept states never exceed the byte cap.

One in-process worker (the real ``_worker.child.worker.Worker``) with a small ``n_batch`` (32) so that prompts of a few
hundred tokens span many chunks; reuse is switched off by detaching its :class:`PrefixStore` from the batcher.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_batching import Harness as BatchHarness
from test_batching import Out

import steadytext_async as st
from steadytext_async._worker.child import selftest
from steadytext_async._worker.child.decode import SequenceDecoder
from steadytext_async._worker.child.llama import SeqState
from steadytext_async._worker.child.prefix import PrefixStore
from steadytext_async._worker.child.worker import Worker
from steadytext_async._worker.parent.affinity import Affinity, anchors
from steadytext_async._worker.protocol import (
    DoneFrame,
    DoneTimings,
    DoneUsage,
    FromWorker,
    Generate,
    GenParams,
    WorkerConfig,
)
from steadytext_async.structured import normalize

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

N_BATCH = 32
SYSTEM = (
    "You are a careful assistant for a shipping company. Answer in one short sentence. Parcels up to 2 kg cost 4 "
    "euros, up to 10 kg 9 euros, heavier ones 15 euros. Delivery takes two days inside the country and five days "
    "abroad. Insurance costs one euro per 100 euros of value. Returns are free within 30 days. Offices open at 8 "
    "and close at 18, Saturdays until 12. Never promise a delivery date. Always mention the tracking page."
)
QUESTIONS = ["How much is a 3 kg parcel?", "And abroad?", "Can I insure it?", "When do you open on Saturday?"]


@dataclasses.dataclass(frozen=True)
class Usage:
    cached: int
    prompt_tokens: int


@dataclasses.dataclass
class ReuseOut(Out):
    """An output with its prompt usage: extra fields, not compared with ``==``."""

    cached: int = dataclasses.field(default=0, compare=False)
    prompt_tokens: int = dataclasses.field(default=0, compare=False)


class Harness(BatchHarness):
    """test_batching's harness, plus each request's usage and sequence id, and reuse switched per run."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker)
        store = worker.batcher.prefix
        assert store is not None
        self.store = store
        self.usage: dict[int, Usage] = {}
        self.seqs: dict[int, int] = {}  # rid -> sequence id it ran in
        admit = worker.batcher.admit

        def recording(rid: int, prompt: list[int], truncated: int, decoder: SequenceDecoder) -> None:
            admit(rid, prompt, truncated, decoder)
            self.seqs[rid] = worker.batcher.slots[rid].seq

        worker.batcher.admit = recording  # type: ignore[method-assign]

    def collect(self, msg: FromWorker) -> None:
        super().collect(msg)
        if isinstance(msg, DoneFrame):
            self.usage[msg.rid] = Usage(msg.usage.prompt_tokens_cached, msg.usage.prompt_tokens)
            assert msg.prefix_bytes == (self.store.held if self.worker.batcher.prefix else 0)

    def run(  # type: ignore[override]
        self, schedule: dict[int, list[GenParams]], *, reuse: bool
    ) -> list[ReuseOut]:
        """Reuse off detaches the store (nothing restored or kept)."""
        self.worker.batcher.prefix = self.store if reuse else None
        first = self.rid + 1
        outs = []
        for rid, out in enumerate(super().run(schedule), first):
            usage = self.usage.pop(rid)
            outs.append(ReuseOut(out.text, out.token_ids, out.tokens, out.finish, usage.cached, usage.prompt_tokens))
        return outs

    def forget(self) -> None:
        while len(self.store):
            self.store._drop(next(iter(self.store._kept)))


def _config(model_spec: Any, verdicts: Path) -> WorkerConfig:
    return WorkerConfig(
        model_path=str(model_spec.path),
        n_ctx=1024,
        n_batch=N_BATCH,
        n_threads=2,
        max_batch=4,
        verdict_path=str(verdicts),
        prefix_cache_bytes=64 * 1024 * 1024,
    )


@pytest.fixture(scope="module")
def harness(model_spec: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    cfg = _config(model_spec, tmp_path_factory.mktemp("verdicts") / "batch-verdicts.json")
    box: list[Harness] = []
    worker = Worker(cfg, send=lambda msg: box[0].collect(msg))
    box.append(Harness(worker))
    yield box[0]
    worker.close()


def chat(turns: int, n: int = 12, **kw: Any) -> GenParams:
    """The conversation after ``turns`` answered questions (fixed assistant replies), asking the next one."""
    msgs: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    for i in range(turns):
        msgs += [{"role": "user", "content": QUESTIONS[i]}, {"role": "assistant", "content": f"Answer {i}."}]
    msgs.append({"role": "user", "content": QUESTIONS[turns]})
    return GenParams(prompt="", messages=tuple(msgs), max_new_tokens=n, logprobs=True, top_logprobs=3, **kw)


def raw(tail: str, n: int = 12, **kw: Any) -> GenParams:
    return GenParams(prompt=f"{SYSTEM}\n\n{tail}", max_new_tokens=n, logprobs=True, top_logprobs=3, **kw)


NEIGHBOURS = [
    GenParams(prompt="Once upon a time", max_new_tokens=10, logprobs=True),
    GenParams(prompt="A long prompt about rivers. " * 12, max_new_tokens=8),
    GenParams(prompt="The weather today", max_new_tokens=10, temperature=1.2, seed=11, logprobs=True),
]


def test_multi_turn_chat_reuses_and_matches_bytes(harness: Harness) -> None:
    """Turn by turn, alone and with neighbours joining: reuse on restores more and more, bytes never change."""
    harness.forget()
    for turn in range(3):
        params = chat(turn)
        off = harness.run({0: [params]}, reuse=False)[0]
        on = harness.run({0: [params]}, reuse=True)[0]
        assert on == off and off.cached == 0
        assert on.finish is not None and len(on.token_ids) == len(on.tokens) > 0
        if turn:  # the system prompt and earlier turns come back, up to the last whole chunk before the end
            assert on.cached > 0 and on.cached % N_BATCH == 0 and on.prompt_tokens - on.cached <= 2 * N_BATCH + 30
        # batched: a neighbour takes sequence 0 first, so the state is restored into another sequence than it was
        # kept from; others join while the prompt is being evaluated
        got = harness.run({0: [NEIGHBOURS[0], params], 2: NEIGHBOURS[1:]}, reuse=True)
        assert got[1] == off and got[1].cached >= on.cached > 0 if turn else got[1] == off
    assert harness.store.hits >= 4


def test_restored_into_a_different_sequence(harness: Harness) -> None:
    harness.forget()
    params = raw("Question: how long does delivery abroad take?\nAnswer:")
    first = harness.run({0: [params]}, reuse=True)[0]  # alone: sequence 0, kept
    rid_first = harness.rid
    again = harness.run({0: [*NEIGHBOURS[:2], params]}, reuse=True)[2]  # third in: sequence 2
    assert first.cached == 0 and again.cached > 0
    assert harness.seqs[rid_first] == 0 and harness.seqs[harness.rid] != 0
    assert again == first


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": 0.9, "seed": 7},
        {"temperature": 1.3, "seed": 123, "top_k": 0, "top_p": 1.0, "min_p": 0.0},
        {"constraint": normalize(choices=["two days", "five days", "it depends"])},
        {"constraint": normalize(regex=r"[0-9]{1,2} (days|euros)")},
    ],
    ids=["sampled", "sampled-wide", "choices", "regex"],
)
def test_sampled_and_constrained_match(harness: Harness, kw: dict[str, Any]) -> None:
    harness.forget()
    warm = raw("Question: what does insurance cost?\nAnswer:", **kw)  # keeps the shared system prompt
    params = raw("Question: how long to ship abroad?\nAnswer:", **kw)
    off = harness.run({0: [params]}, reuse=False)[0]
    harness.run({0: [warm]}, reuse=True)
    on = harness.run({0: [NEIGHBOURS[2], params]}, reuse=True)[1]
    assert on.cached > 0 and on == off


def test_shared_system_prompt_across_conversations(harness: Harness) -> None:
    """A kept state longer than the match is cut back to the shared chunks (another conversation, same system)."""
    harness.forget()
    harness.run({0: [chat(3)]}, reuse=True)
    longest = max(len(k.tokens) for k in harness.store._kept.values())
    other = GenParams(
        prompt="",
        messages=({"role": "system", "content": SYSTEM}, {"role": "user", "content": "Are returns free?"}),
        max_new_tokens=12,
        logprobs=True,
    )
    off = harness.run({0: [other]}, reuse=False)[0]
    on = harness.run({0: [other]}, reuse=True)[0]
    assert 0 < on.cached < longest and on.cached % N_BATCH == 0  # the kept state was cut back to the shared chunks
    assert on == off


def test_moving_to_the_wide_context_mid_prompt_and_with_kept_prefixes_keeps_the_bytes(
    model_spec: Any, tmp_path: Path, harness: Harness, held_builds: threading.Event
) -> None:
    """Issue 22: a worker starts in a context of one sequence and moves to its wide one once built. A prompt half
    evaluated when that happens goes on from the copied KV cells, and a prefix kept in the first context restores
    in the second (its state relaid for more KV streams); every byte equals a run that never moved."""
    params, other = chat(2), chat(3, temperature=0.8, seed=5)
    expected = [harness.run({0: [p]}, reuse=False)[0] for p in (params, other)]
    cfg = _config(model_spec, tmp_path / "batch-verdicts.json")
    selftest.store_verdict(Path(str(cfg.verdict_path)), _verdict_key(harness.worker, cfg), 4)
    h = Harness(Worker(cfg, send=lambda msg: h.collect(msg)))
    w = h.worker
    kept = h.run({0: [params]}, reuse=True)[0]
    assert kept == expected[0] and len(h.store) == 1 and w.model.n_seq == 1
    w.batcher.prefix = None
    h.rid += 1
    h.outs[h.rid] = Out()
    w.handle(Generate(h.rid, other))
    w.work()
    w.work()
    slot = w.batcher.slots[h.rid]
    assert 0 < slot.filled < len(slot.prompt) and w.model.n_past[0] == slot.filled  # two chunks in
    held_builds.set()
    assert w._wide is not None
    w._wide.wait()
    while w.batcher.busy:
        w.work()
    moved = h.outs[h.rid]
    assert w.model.n_seq == 4 and h.store.model is w.model
    assert (moved.text, moved.token_ids, moved.tokens, moved.finish) == (
        expected[1].text,
        expected[1].token_ids,
        expected[1].tokens,
        expected[1].finish,
    )
    again = h.run({0: [params, NEIGHBOURS[0]]}, reuse=True)[0]  # restores the prefix kept before the move
    assert again == expected[0] and again.cached > 0 and h.store.hits >= 1
    w.close()


def _verdict_key(worker: Worker, cfg: WorkerConfig) -> str:
    return selftest.verdict_key(cfg.model_path, worker._system_info(), cfg.n_threads, cfg.max_batch, cfg.n_batch)


def test_cap_holds_over_many_prefixes(harness: Harness) -> None:
    """A bounded soak in the fast tier: 40 distinct prefixes under a cap of about three states."""
    store = harness.store
    harness.forget()
    saved_cap = store.cap
    first = harness.run({0: [raw("Warm-up 0:", n=1)]}, reuse=True)[0]
    assert len(store) == 1
    store.cap = store.held * 3 + store.held // 2
    try:
        outs = []
        for i in range(40):
            outs += harness.run({0: [raw(f"Note {i}: " + "abc " * (i % 7) + "\nAnswer:", n=1)]}, reuse=True)
            assert store.held <= store.cap and len(store) <= 3
        assert store.peak <= saved_cap and all(o.finish == "length" for o in outs) and first.finish == "length"
    finally:
        store.cap = saved_cap


# -- the store without a model ---------------------------------------------------------------------------------
class FakeStates:
    """Sequences as token lists; a state is the tokens' bytes (4 per token, so sizes are predictable)."""

    n_batch = 4

    def __init__(self) -> None:
        self.seqs: dict[int, list[int]] = {}
        self.loads: list[tuple[int, int]] = []

    def state_size(self, seq: int) -> int:
        return 4 * len(self.seqs[seq])

    def save_state(self, seq: int, size: int) -> SeqState:
        data = b"".join(t.to_bytes(4, "little") for t in self.seqs[seq])
        assert len(data) == size
        return SeqState((ctypes.c_uint8 * size).from_buffer_copy(data), 1, (size,))

    def load_state(self, seq: int, state: SeqState, keep: int) -> None:
        raw_ = bytes(state.data)
        self.seqs[seq] = [int.from_bytes(raw_[i : i + 4], "little") for i in range(0, len(raw_), 4)][:keep]
        self.loads.append((seq, keep))


def test_store_restores_the_longest_chunk_aligned_prefix() -> None:
    model = FakeStates()
    store = PrefixStore(model, cap=1000)
    a = list(range(10))  # boundary 8
    assert store.boundary(a) == 8 and store.boundary(a[:8]) == 4 and store.boundary(a[:4]) == 0
    model.seqs[0] = a[:8]
    store.keep(0, a[:8])
    assert store.restore(1, [*a[:5], 99, 98, 97, 96]) == 4 and model.seqs[1] == a[:4]  # cut back to the match
    assert store.restore(2, a[:9]) == 8 and model.seqs[2] == a[:8]
    assert store.restore(3, a[:8]) == 4  # at least one token is left to evaluate
    assert store.restore(0, [5] * 20) == 0 and store.hits == 3 and store.reused == 16
    model.seqs[0] = [*a[:8], 1, 2, 3, 4]
    store.keep(0, model.seqs[0])  # extends the kept prefix: the shorter one is dropped
    assert len(store) == 1 and store.held == 48
    store.keep(0, a[:4])  # inside a kept one: nothing new
    assert len(store) == 1 and store.held == 48
    store.keep(0, a[:6])  # not a whole number of chunks: refused
    assert len(store) == 1


def test_store_evicts_least_recently_used_and_never_exceeds_the_cap() -> None:
    model = FakeStates()
    store = PrefixStore(model, cap=100)  # room for three 8-token states (32 bytes each)
    prompts = [[i] * 8 for i in range(1000)]
    for i, p in enumerate(prompts):
        model.seqs[0] = p
        store.keep(0, p)
        assert store.held <= 100 and len(store) <= 3
        if i == 5:
            assert store.restore(1, prompts[3] + [0]) == 8  # used: survives the next insertion
            model.seqs[0] = prompts[6]
            store.keep(0, prompts[6])
            assert store.restore(1, prompts[3] + [0]) == 8 and store.restore(1, prompts[4] + [0]) == 0
    assert store.peak <= 100 and store.held == 96
    model.seqs[0] = list(range(40))
    store.keep(0, model.seqs[0])  # 160 bytes: bigger than the cap, not kept, nothing evicted for it
    assert len(store) == 3 and store.held == 96


def test_affinity_scores_the_leading_text_a_worker_saw() -> None:
    aff = Affinity()

    class Worker_:  # weakly referenceable stand-ins for WorkerHandle
        pass

    w1, w2 = Worker_(), Worker_()
    long = "x" * 2000
    k_short = anchors(GenParams(prompt=long[:1100], max_new_tokens=1))
    k_long = anchors(GenParams(prompt=long + "tail", max_new_tokens=1))
    assert len(k_short) == 2 and len(k_long) == 3 and k_long[:2] == k_short
    aff.sent(w1, k_short)
    assert aff.score(w1, k_long) == 2 and aff.score(w2, k_long) == 0
    msgs = ({"role": "system", "content": long}, {"role": "user", "content": "a"})
    k_msgs = anchors(GenParams(prompt="", messages=msgs, max_new_tokens=1))
    aff.sent(w2, k_msgs)
    assert aff.score(w2, anchors(GenParams(prompt="", messages=(*msgs, msgs[1]), max_new_tokens=1))) == len(k_msgs)
    timings = DoneTimings(prompt_eval=0.1, decode=0.2, n_threads=1, max_batch=1)
    aff.done(w2, DoneFrame(1, "length", DoneUsage(80, 8, prompt_tokens_cached=64), timings, prefix_bytes=123))
    aff.done(w1, DoneFrame(2, "length", DoneUsage(80, 8), timings, prefix_bytes=7))
    assert (aff.hits, aff.reused, aff.held([w1, w2])) == (1, 64, 130)


# -- through the client: stream and whole, usage, settings -----------------------------------------------------
def test_setting_from_env_and_validation() -> None:
    assert st.Settings.from_env({}).prefix_cache_mb == 256
    assert st.Settings.from_env({"STEADYTEXT_PREFIX_CACHE_MB": "0"}).prefix_cache_mb == 0
    with pytest.raises(st.InvalidRequestError, match="prefix_cache_mb"):
        st.Settings(prefix_cache_mb=-1)


@pytest.mark.timeout(900)  # two clients, each starting a worker: minutes on a loaded 2-core machine
async def test_client_stream_and_whole_match_with_reuse_on_and_off() -> None:
    # max_batch=1: batching is not what this tests, and a worker with no verdict for this shape would run the
    # batching self-test (about 10 CPU seconds) between these requests' steps
    convo: list[dict[str, str]] = [{"role": "system", "content": SYSTEM * 2}]
    results: dict[int, list[tuple[str, list[int], Any]]] = {}
    cached: list[int] = []
    for mb in (0, 64):
        async with st.AsyncSteadyText(
            workers=1, threads=2, prefix_cache_mb=mb, n_batch=64, max_batch=1, strict=True, start_timeout=900.0
        ) as client:
            got = []
            for q in QUESTIONS[:3]:
                msgs = [*convo, {"role": "user", "content": q}]
                whole = await client.generate(messages=msgs, max_new_tokens=6, return_logprobs=True)
                items = [c async for c in client.stream(messages=msgs, max_new_tokens=6, return_logprobs=True)]
                pieces = [c for c in items if isinstance(c, st.Chunk)]
                last = items[-1]
                assert not whole.fallback and whole.finish_reason in ("length", "eos")
                assert isinstance(last, st.GenerationResult) and "".join(c.text for c in pieces) == whole.text
                assert (last.text, last.token_ids, last.logprobs) == (whole.text, whole.token_ids, whole.logprobs)
                assert [t for c in pieces for t in c.token_ids] == whole.token_ids
                got.append((whole.text, whole.token_ids, [t.logprob for t in whole.logprobs or []]))
                if mb:
                    cached += [whole.usage.prompt_tokens_cached, last.usage.prompt_tokens_cached]
                else:
                    assert whole.usage.prompt_tokens_cached == 0
            results[mb] = got
    assert results[64] == results[0]
    # the first request finds nothing kept; every later one restores at least the shared system prompt
    assert cached[0] == 0 and all(c > 0 and c % 64 == 0 for c in cached[1:]), cached


def test_serve_usage_reports_cached_tokens() -> None:
    from steadytext_async._models import Usage
    from steadytext_async.serve._openai import usage

    class R:
        usage = Usage(prompt_tokens=700, completion_tokens=5, prompt_tokens_cached=512)

    body = usage(R())  # type: ignore[arg-type]
    assert body == {
        "prompt_tokens": 700,
        "completion_tokens": 5,
        "total_tokens": 705,
        "prompt_tokens_details": {"cached_tokens": 512},
    }
    assert json.loads(json.dumps(body)) == body


def test_metrics_show_prefix_counters() -> None:
    from steadytext_async.serve._metrics import Metrics

    stats = {
        "workers_alive": 1,
        "workers_max": 1,
        "workers_busy": 0,
        "respawns": 0,
        "generations": 3,
        "cache_hits": 0,
        "cache_misses": 0,
        "prefix_hits": 2,
        "prefix_tokens": 1024,
        "prefix_bytes": 5_000_000,
    }
    text = Metrics(lambda: stats).render().decode()
    assert "steadytext_prefix_reuse_hits_total 2.0" in text
    assert "steadytext_prefix_reused_tokens_total 1024.0" in text
    assert "steadytext_prefix_cache_bytes 5e+06" in text


@pytest.mark.slow
def test_cap_holds_over_10000_requests(harness: Harness) -> None:
    """The soak the issue asks for: 10,000 requests over many different prefixes; held bytes never above the cap."""
    store = harness.store
    harness.forget()
    saved_cap = store.cap
    harness.run({0: [raw("Warm-up:", n=1)]}, reuse=True)
    store.cap = store.held * 5
    try:
        hits0 = store.hits
        for i in range(10_000):
            tail = f"Ticket {i % 400}: " + "x " * (i % 13)
            out = harness.run({0: [raw(tail, n=1)]}, reuse=True)[0]
            assert out.finish == "length" and store.held <= store.cap and len(store) <= 5
        assert store.hits - hits0 > 9_000
    finally:
        store.cap = saved_cap


@pytest.mark.slow
def test_bench_prefix_quick_is_identical() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_prefix.py"
    out = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = {f["figure"]: f for f in map(json.loads, (x for x in out.stdout.splitlines() if x.startswith("{")))}
    assert set(figures) == {"prefix_ttft", "prefix_conversation", "prefix_peer_changes"}
    assert figures["prefix_ttft"]["identical"] is True and figures["prefix_ttft"]["last_turn_cached_tokens"] > 0
