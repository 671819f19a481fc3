"""The worker pipe's wire (:mod:`steadytext_async._worker.protocol`): what the worker sends is typed all the way down,
a frame names only the wire's own classes (the parent never imports a module of the child's side to read one), and
frames stay small."""

from __future__ import annotations

import dataclasses
import io
import pickle
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints

import pytest

from steadytext_async import _errorwire
from steadytext_async._worker import protocol
from steadytext_async._worker.protocol import (
    HEADER,
    BatchVerdict,
    Cancelled,
    DoneFrame,
    DoneTimings,
    DoneUsage,
    ErrorFrame,
    ErrorRecord,
    Fatal,
    FromWorker,
    PieceFrame,
    Ready,
    ThreadsAck,
    TokenInfo,
    WorkerInfo,
    decode_from_worker,
    encode_frame,
)

WIRE = {protocol.__name__, _errorwire.__name__}  # the modules a frame may name: the wire and its error record
INFO = WorkerInfo(
    pid=4242,
    llama_cpp_python_version="0.3.36",
    llama_cpp_system_info="CPU : AVX2 = 1 |",
    cpu="x86_64 [avx2 fma]",
    n_ctx=2048,
    n_batch=512,
    n_ubatch=512,
    n_vocab=262144,
    max_batch=4,
    kernel="flash_attn=0,kv_unified=0,n_seq_max=4,repack=0,tiled_mm=0",
    selftest_seconds=1.25,
    selftest_pending=False,
    chat_template_sha256="ab" * 32,
)
TOKEN = TokenInfo(1234, b" tok", -0.25, tuple((100 + i, b" alt%d" % i, -1.5 - i) for i in range(5)))
USAGE = DoneUsage(prompt_tokens=12, completion_tokens=24, prompt_tokens_truncated=1, prompt_tokens_cached=8)
TIMINGS = DoneTimings(
    prompt_eval=0.0123456789, decode=0.456789123, n_threads=2, max_batch=4, kernel="n_seq_max=1,repack=0"
)
FRAMES: list[FromWorker] = [
    Ready(INFO),
    Fatal(ErrorRecord("ValueError", "no such file")),
    PieceFrame(7, " tok", [1234], None),
    PieceFrame(7, " tok tok", [1234, 1234], [TOKEN, TOKEN]),
    DoneFrame(7, "length", USAGE, TIMINGS, prefix_bytes=65536),
    ErrorFrame(7, ErrorRecord("ConstraintError", "budget ran out", "partial")),
    Cancelled(7),
    ThreadsAck(3, 1),
    BatchVerdict(dataclasses.replace(INFO, widening=True)),
]


class _Recording(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.named: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.named.add(f"{module}.{name}")
        return super().find_class(module, name)


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_a_frame_round_trips_and_names_only_wire_classes(frame: FromWorker) -> None:
    body = encode_frame(frame)[HEADER.size :]
    assert decode_from_worker(body) == frame
    reader = _Recording(body)
    assert reader.load() == frame
    assert reader.named, "a message is a class of the wire"
    # before: a logprob record was the child's decode.TokenInfo, so reading one imported the decode loop's module
    assert {n.rpartition(".")[0] for n in reader.named} <= WIRE


def _untyped(hint: Any, seen: set[type]) -> list[str]:
    """Parts of a type that are not spelled out: ``Any``, a dict, an unparameterised container."""
    if hint is Any:
        return ["Any"]
    origin = get_origin(hint)
    if origin is dict or hint is dict:
        return [repr(hint)]
    if hint in (list, tuple, set, frozenset):
        return [repr(hint)]
    if origin in (list, tuple, typing.Union, types.UnionType):
        return [bad for arg in get_args(hint) if arg is not Ellipsis for bad in _untyped(arg, seen)]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type) and hint not in seen:
        seen.add(hint)
        assert hint.__module__ in WIRE, f"{hint} is not a wire class"
        params = hint.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and "__slots__" in hint.__dict__, f"{hint.__name__} is not a frozen slotted dataclass"
        hints = get_type_hints(hint)
        return [f"{hint.__name__}.{k}: {bad}" for k, v in hints.items() for bad in _untyped(v, seen)]
    return []


def test_what_the_worker_sends_is_typed_all_the_way_down() -> None:
    # before: Ready.info and DoneFrame.usage/timings were dicts, PieceFrame.tokens a list of Any
    seen: set[type] = set()
    assert [bad for cls in get_args(FromWorker) for bad in _untyped(cls, seen)] == []
    assert {WorkerInfo, TokenInfo, DoneUsage, DoneTimings, ErrorRecord} <= seen


def test_frames_stay_small() -> None:
    # the done frame of every request; as dicts it took 271 bytes (every key spelled out each time)
    assert len(encode_frame(DoneFrame(7, "length", USAGE, TIMINGS))) < 200
    assert len(encode_frame(PieceFrame(7, " tok", [1234], None))) < 100  # the common piece: one token, no logprobs
