"""Frames between the pool and a worker process: 4-byte big-endian length + pickle of one message dataclass.

Parent -> child: :class:`Init` (once), then :class:`Generate`, :class:`Cancel`, :class:`SetThreads`, :class:`Shutdown`.
Child -> parent: :class:`Ready` or :class:`Fatal` (once), then per request any number of :class:`PieceFrame` followed by
one of :class:`DoneFrame`, :class:`ErrorFrame`, :class:`Cancelled`; and :class:`ThreadsAck` for each
:class:`SetThreads`, and :class:`BatchVerdict` whenever the worker's report changed after Ready: it starts unbatched
in a context of one sequence, and widens once its self-test has decided how many requests it decodes together and
its wide context is built. A worker may run several requests at once (batched decoding), so frames of
different requests interleave; every request frame carries its ``rid``. Only our own child writes to the pipe, so pickle
is safe here.

This is the one module both sides import: the parent's (:mod:`.parent`: pool, handles, thread budget) and the worker
process's (:mod:`.child`); it imports neither. Every message, and every part of one, is a frozen slotted dataclass of
this module (errors: :class:`~steadytext_async._errorwire.ErrorRecord`), so reading a frame imports nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, dataclass_transform

from .._errorwire import ErrorRecord
from .._exceptions import InvalidRequestError
from .._options import DEFAULT_MIN_P, DEFAULT_SEED, DEFAULT_TOP_K, DEFAULT_TOP_LOGPROBS, DEFAULT_TOP_P
from .limits import MAX_FRAME, MAX_PROMPT_BYTES

if TYPE_CHECKING:
    from ..structured import Constraint

__all__ = [
    "HEADER",
    "MAX_FRAME",
    "MAX_PROMPT_BYTES",
    "BatchVerdict",
    "Cancel",
    "Cancelled",
    "DoneFrame",
    "DoneTimings",
    "DoneUsage",
    "ErrorFrame",
    "ErrorRecord",
    "Fatal",
    "FromWorker",
    "GenParams",
    "Generate",
    "Init",
    "PieceFrame",
    "Ready",
    "SetThreads",
    "Shutdown",
    "ThreadsAck",
    "ToWorker",
    "TokenInfo",
    "WorkerConfig",
    "WorkerInfo",
    "child_argv",
    "child_env",
    "decode_from_worker",
    "decode_header",
    "encode_frame",
    "read_frame_fd",
    "write_frame_fd",
]

HEADER = struct.Struct(">I")


def child_argv() -> list[str]:
    """The worker's command line. ``-P``: the current directory is *not* put on ``sys.path``, so a planted
    ``llama_cpp.py`` (or any module) in a writable cwd cannot run inside the worker."""
    return [sys.executable, "-P", "-m", "steadytext_async._worker.child"]


def child_env() -> dict[str, str] | None:
    """The worker's environment: inherited, except that when this package is only importable because it sits in
    the current directory (a source checkout, not installed), that directory is named explicitly in PYTHONPATH."""
    package_root = Path(__file__).resolve().parents[2]
    if package_root != Path.cwd().resolve() or ("" not in sys.path and str(package_root) not in sys.path):
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), env.get("PYTHONPATH", "")) if p)
    return env


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def _message(cls: type[_T]) -> type[_T]:
    """Every message, and every part of one, is a frozen dataclass with slots."""
    return dataclasses.dataclass(frozen=True, slots=True)(cls)


# -- parent -> child ---------------------------------------------------------------------------------------------
@_message
class WorkerConfig:
    model_path: str
    n_ctx: int  # per sequence
    n_batch: int
    n_threads: int
    llama_log: bool = False
    max_batch: int = 8  # sequences per worker; the start-up self-test may lower it
    verdict_path: str | None = None  # where the self-test verdict is cached (None: not cached)
    prefix_cache_bytes: int = 0  # cap on kept prompt-prefix states (0: no prefix reuse)


@_message
class GenParams:
    prompt: str  # a raw-format model's prompt (tokenized as is, after BOS); ignored when ``messages`` is set
    max_new_tokens: int
    messages: tuple[dict[str, Any], ...] | None = None  # a chat model's conversation, rendered by its template
    stop: str | None = None
    temperature: float = 0.0
    seed: int = DEFAULT_SEED
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    min_p: float = DEFAULT_MIN_P
    logprobs: bool = False
    top_logprobs: int = DEFAULT_TOP_LOGPROBS
    constraint: Constraint | None = None
    tools: tuple[dict[str, Any], ...] | None = None  # OpenAI-shaped tools, described in the prompt (see _tools)
    tool_choice: Any = None  # "auto", "none", "required" or {"type": "function", "function": {"name": ...}}


@_message
class Init:
    cfg: WorkerConfig


@_message
class Generate:
    rid: int
    params: GenParams
    n_threads: int | None = None  # the worker's thread share from now on, if given


@_message
class Cancel:
    rid: int


@_message
class SetThreads:
    seq: int
    n: int


@_message
class Shutdown:
    pass


# -- child -> parent ---------------------------------------------------------------------------------------------
@_message
class WorkerInfo:
    """What a worker reports about itself in :class:`Ready`; a :class:`BatchVerdict` later replaces it (``max_batch``,
    ``kernel``, the self-test fields and ``widening`` change). The llama.cpp fields go into each result's
    fingerprint."""

    pid: int
    llama_cpp_python_version: str
    llama_cpp_system_info: str
    cpu: str
    n_ctx: int  # per sequence
    n_batch: int
    n_ubatch: int
    n_vocab: int
    max_batch: int  # requests decoded together now (1 until the batching self-test decides)
    kernel: str  # llama.cpp settings of the context in use, "name=value" joined by commas (n_seq_max: its sequences)
    selftest_seconds: float
    selftest_pending: bool
    chat_template_sha256: str | None = None  # None: the model has no chat template
    widening: bool = False  # its wide context is being built: max_batch grows once it is in use (child/widen.py)


@_message
class Ready:
    info: WorkerInfo


@_message
class Fatal:
    """The worker could not start (its model did not load): the parent reports ModelUnavailableError."""

    error: ErrorRecord


@_message
class TokenInfo:
    """One generated token's logprob record: its id, bytes and logprob, and the top alternatives as
    ``(token_id, bytes, logprob)`` (plain tuples: up to 20 per token, and a tuple pickles smallest)."""

    token_id: int
    data: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...]


@_message
class PieceFrame:
    rid: int
    text: str
    token_ids: list[int]
    tokens: list[TokenInfo] | None  # one per token when logprobs were asked for


@_message
class DoneUsage:
    prompt_tokens: int  # after truncation
    completion_tokens: int
    prompt_tokens_truncated: int = 0  # cut from the front to fit the context
    prompt_tokens_cached: int = 0  # restored from a kept prefix instead of evaluated (see child/prefix.py)


@_message
class DoneTimings:
    """Seconds spent on the prompt and on decoding, and what this request ran with (the worker's state may have
    changed since: its thread share, and its batch limit once the self-test decided)."""

    prompt_eval: float
    decode: float
    n_threads: int
    max_batch: int  # the widest batch this request could be in
    kernel: str | None = None  # the context it finished in (WorkerInfo.kernel's form); None: the worker's


@_message
class DoneFrame:
    rid: int
    finish_reason: str
    usage: DoneUsage
    timings: DoneTimings
    prefix_bytes: int = 0  # bytes of prompt-prefix state the worker keeps now (see child/prefix.py)


@_message
class ErrorFrame:
    """Request ``rid`` failed; the parent raises :func:`~steadytext_async._errorwire.from_record` of ``error``."""

    rid: int
    error: ErrorRecord


@_message
class Cancelled:
    rid: int


@_message
class ThreadsAck:
    seq: int
    n: int


@_message
class BatchVerdict:
    """The worker's report changed after Ready: it now decodes up to ``info.max_batch`` requests together (its
    self-test ran, or another worker's verdict was found, and its wide context is in use), or its self-test decided
    while the wide context is still being built. ``info`` replaces the one from Ready."""

    info: WorkerInfo

    @property
    def max_batch(self) -> int:
        return self.info.max_batch


ToWorker = Init | Generate | Cancel | SetThreads | Shutdown
FromWorker = Ready | Fatal | PieceFrame | DoneFrame | ErrorFrame | Cancelled | ThreadsAck | BatchVerdict
_TO_WORKER = (Init, Generate, Cancel, SetThreads, Shutdown)
_FROM_WORKER = (Ready, Fatal, PieceFrame, DoneFrame, ErrorFrame, Cancelled, ThreadsAck, BatchVerdict)


def encode_frame(msg: ToWorker | FromWorker) -> bytes:
    """One frame; a message over :data:`MAX_FRAME` raises InvalidRequestError (the reader would reject it)."""
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_FRAME:
        raise InvalidRequestError(
            f"a {type(msg).__name__} frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit"
        )
    return HEADER.pack(len(body)) + body


def decode_header(header: bytes) -> int:
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds the {MAX_FRAME} limit")
    return int(size)


def decode_body(body: bytes) -> ToWorker | FromWorker:
    msg = pickle.loads(body)
    if not isinstance(msg, _TO_WORKER + _FROM_WORKER):
        raise ValueError(f"malformed frame: {type(msg).__name__}")
    return msg


def decode_from_worker(body: bytes) -> FromWorker:
    """The body of a frame the worker sent (the parent's own kinds of message are malformed there)."""
    msg = decode_body(body)
    if isinstance(msg, _TO_WORKER):
        raise ValueError("malformed frame from worker")
    return msg


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame_fd(fd: int) -> ToWorker | FromWorker | None:
    """Blocking read of one frame; None at end of file."""
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, decode_header(header))
    if body is None:
        return None
    return decode_body(body)


def write_frame_fd(fd: int, msg: ToWorker | FromWorker) -> None:
    data = memoryview(encode_frame(msg))
    while data:
        written = os.write(fd, data)
        data = data[written:]
