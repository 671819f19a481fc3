"""A loaded GGUF model and one llama.cpp context holding up to ``n_seq`` sequences, each with its own KV stream.

Only worker processes (and benchmarks/tests of the decode loop) import this: it imports llama_cpp.

The kernel settings are fixed (:data:`KERNEL`) because they decide the output bytes:

- CPU weight repacking off (model param ``use_extra_bufts``): with it on, batched steps differ from single ones;
- flash attention off: with it on, sequences of different lengths in one step differ from decoding them alone;
- ggml-cpu's tiled K-quant matmul off (``GGML_CPU_TILED_MM=0``): ggml switches Q4_K/Q6_K matmuls to a tiled
  kernel from 8 columns on, whose sums round differently from the per-row ``vec_dot`` kernel, so 8 or more
  sequences in one step differed from decoding alone. ggml reads the variable once per process, at the first
  matmul: this module sets it on import, so import it before any other llama.cpp model runs in the process;
- ``kv_unified`` off, ``n_seq_max = n_seq``: every sequence has its own KV stream of ``n_ctx`` cells, so a
  sequence decodes to the same bytes in a context of one sequence as in one of many (a worker starts with one and
  moves to its wide context once that is built, see :mod:`.widen`).

A prompt is always evaluated alone (:meth:`LlamaModel.prefill`, in ``n_batch`` chunks), so its batch split never
depends on other traffic; :meth:`LlamaModel.step` then decodes the next token of several sequences in one
``llama_decode`` call.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import os
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .sampling import Logits

if TYPE_CHECKING:
    from .decode import SequenceDecoder

__all__ = ["KERNEL", "LlamaModel", "Logits", "SeqState"]

# Settings that change the output bytes; recorded in the worker info and so in each result's fingerprint.
KERNEL: dict[str, bool] = {"repack": False, "flash_attn": False, "kv_unified": False, "tiled_mm": False}
os.environ["GGML_CPU_TILED_MM"] = "1" if KERNEL["tiled_mm"] else "0"


_U32 = struct.Struct("=I")
_HEAD = struct.Struct("=Ii")  # llama.cpp's sequence state header: its magic and the sequence id it was saved from
_MAGIC = 0xAF143CD8


@dataclasses.dataclass(frozen=True, slots=True)
class SeqState:
    """One sequence's KV cells as llama.cpp serialises them (:meth:`LlamaModel.save_state`), and what loading them
    into a context with more sequences takes (:func:`_restream`): the saving context's stream count and the sizes
    of the records of the memory's KV caches after the header (one record, or two for a model with sliding-window
    layers: base and SWA)."""

    data: ctypes.Array[ctypes.c_uint8]
    n_stream: int
    parts: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.data)


def _restream(state: SeqState, n: int) -> ctypes.Array[ctypes.c_uint8]:
    """``state``'s bytes for a context of ``n`` (more) KV streams.

    llama.cpp writes a sequence's state as a header (``u32`` magic, ``i32`` sequence id) and one record per KV
    cache: ``u32 n_stream``, then per stream ``u32 cell_count`` and, if not 0, the cells (``llama_context::
    state_seq_get_data``, ``llama_kv_cache::state_write``). Reading a sequence, it checks ``n_stream`` against its
    own, puts every stream's cells into the target sequence's stream and skips a stream whose count is 0
    (``state_read_sinfo``). So a record from fewer streams reads the same once its ``n_stream`` says ``n`` and
    empty streams fill the difference, ahead of its own. A layout this does not match fails here or in
    ``llama_state_seq_set_data`` (RuntimeError), never silently.
    """
    raw = memoryview(state.data).cast("B")
    if _HEAD.unpack_from(raw)[0] != _MAGIC:
        raise RuntimeError("not a llama.cpp sequence state")
    out = bytearray(raw[: _HEAD.size])
    at = _HEAD.size
    for size in state.parts:
        (m,) = _U32.unpack_from(raw, at)
        if m != state.n_stream or n < m:
            raise RuntimeError(f"cannot restream a KV record of {m} streams to {n}")
        out += _U32.pack(n) + _U32.pack(0) * (n - m) + raw[at + _U32.size : at + size]
        at += size
    if at != len(raw):
        raise RuntimeError("KV record sizes do not add up")
    return (ctypes.c_uint8 * len(out)).from_buffer(out)


_SILENT: list[Any] = []  # the one log callback of the process, kept alive as long as llama.cpp may call it


def _silence(llama_cpp: Any) -> None:
    """Drop llama.cpp's log (it logs through the callback even with verbose=False). One callback per process: a
    callback owned by a model that was closed and collected would leave llama.cpp calling freed memory."""
    if not _SILENT:
        _SILENT.append(llama_cpp.llama_log_callback(lambda level, text, user_data: None))
        llama_cpp.llama_log_set(_SILENT[0], ctypes.c_void_p(0))


class LlamaModel:
    def __init__(
        self,
        path: str,
        *,
        n_ctx: int,
        n_batch: int,
        n_threads: int,
        n_seq: int = 1,
        log: bool = False,
        weights: Any = None,
    ) -> None:
        """Load ``path``; ``n_ctx`` is the context of *each* of the ``n_seq`` sequences.

        ``weights``: an already loaded model to share (see :meth:`sibling`); this object then never frees it.
        """
        import llama_cpp
        from llama_cpp import _internals

        self.lc = llama_cpp
        self.path = path
        self.log = log
        if not log:
            _silence(llama_cpp)
        self._owns_weights = weights is None
        if weights is None:
            mparams = llama_cpp.llama_model_default_params()
            mparams.use_extra_bufts = KERNEL["repack"]
            weights = _internals.LlamaModel(path_model=path, params=mparams, verbose=log)
        self.model: Any = weights
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx * n_seq
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq
        cparams.kv_unified = KERNEL["kv_unified"]
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.no_perf = True
        self._context: Any = _internals.LlamaContext(model=self.model, params=cparams, verbose=log)
        self.ctx = self._context.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_seq = n_seq
        self.n_ctx = int(llama_cpp.llama_n_ctx_seq(self.ctx))
        self.n_batch = n_batch
        self.n_threads = n_threads
        self.n_vocab = int(self.model.n_vocab())
        self.vocab = self.model.vocab
        self._batch = llama_cpp.llama_batch_init(max(n_batch, n_seq), 0, 1)
        self.n_past = [0] * n_seq
        self._metadata: dict[str, str] | None = None
        # a sequence's state loads into a context with more sequences (_restream): KV caches only, no recurrent state
        raw = self.model.model
        self.movable = not (llama_cpp.llama_model_is_recurrent(raw) or llama_cpp.llama_model_is_hybrid(raw))

    def sibling(self, *, n_ctx: int, n_seq: int) -> LlamaModel:
        """Another context over the same weights (no second load), with the same kernel settings and ``n_batch``."""
        return LlamaModel(
            self.path,
            n_ctx=n_ctx,
            n_batch=self.n_batch,
            n_threads=self.n_threads,
            n_seq=n_seq,
            log=self.log,
            weights=self.model,
        )

    @property
    def kernel(self) -> str:
        """The settings this context decodes with, as recorded in fingerprints: :data:`KERNEL` and ``n_seq_max``
        (which does not change a sequence's bytes, see the module docstring; recorded as what ran)."""
        kernel = {**KERNEL, "n_seq_max": self.n_seq}
        return ",".join(f"{k}={int(v)}" for k, v in sorted(kernel.items()))

    def pass_weights(self, heir: LlamaModel) -> None:
        """Make ``heir`` (a :meth:`sibling`) free the shared weights instead of this object, which may then close."""
        if heir.model is not self.model:
            raise ValueError("pass_weights: not a sibling over the same weights")
        heir._owns_weights, self._owns_weights = self._owns_weights, False

    def close(self) -> None:
        if self._batch is not None:
            self.lc.llama_batch_free(self._batch)
            self._batch = None
        self._context.close()
        if self._owns_weights:
            self.model.close()

    # -- vocabulary --------------------------------------------------------------------------------------------
    def tokenize(self, text: bytes, *, add_bos: bool, special: bool) -> list[int]:
        return list(self.model.tokenize(text, add_bos, special))

    @property
    def metadata(self) -> dict[str, str]:
        if self._metadata is None:
            self._metadata = dict(self.model.metadata())
        return self._metadata

    def token_bos(self) -> int:
        return int(self.model.token_bos())

    def token_eos(self) -> int:
        return int(self.model.token_eos())

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing)."""
        buf = ctypes.create_string_buffer(64)
        n = self.lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return bytes(buf.raw[:n])

    def is_end(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, end-of-turn)."""
        return bool(self.lc.llama_vocab_is_eog(self.vocab, token))

    # -- decoding ----------------------------------------------------------------------------------------------
    def set_threads(self, n: int) -> None:
        self.lc.llama_set_n_threads(self.ctx, n, n)
        self.n_threads = n

    def clear(self, seq: int) -> None:
        """Forget sequence ``seq`` (its KV cells are freed; other sequences are untouched)."""
        self.lc.llama_memory_seq_rm(self.memory, seq, -1, -1)
        self.n_past[seq] = 0

    def state_size(self, seq: int) -> int:
        """Bytes of sequence ``seq``'s state (its KV cells) as :meth:`save_state` would copy them."""
        return int(self.lc.llama_state_seq_get_size(self.ctx, seq))

    def save_state(self, seq: int, size: int) -> SeqState:
        """A copy of sequence ``seq``'s state; ``size`` from :meth:`state_size` (nothing decoded in between)."""
        buf = (ctypes.c_uint8 * size)()
        got = self.lc.llama_state_seq_get_data(self.ctx, buf, size, seq)
        if got != size:
            raise RuntimeError(f"llama_state_seq_get_data copied {got} of {size} bytes")
        # the header and the SWA cache's record alone (all of it for a model without one): where the records meet
        swa = int(self.lc.llama_state_seq_get_size_ext(self.ctx, seq, self.lc.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY))
        head = _HEAD.size
        parts = (size - head,) if swa in (0, size) else (size - swa, swa - head)
        return SeqState(buf, self.n_seq, parts)

    def load_state(self, seq: int, state: SeqState, keep: int) -> None:
        """Make sequence ``seq`` hold the first ``keep`` positions of a state saved from any sequence of this
        context or of a sibling with fewer sequences (a worker's one-sequence context; needs :attr:`movable`)."""
        self.clear(seq)
        data = state.data if state.n_stream == self.n_seq or not self.movable else _restream(state, self.n_seq)
        if self.lc.llama_state_seq_set_data(self.ctx, data, len(data), seq) != len(data):
            self.clear(seq)
            raise RuntimeError("llama_state_seq_set_data failed")
        self.lc.llama_memory_seq_rm(self.memory, seq, keep, -1)
        self.n_past[seq] = keep

    def prefill(self, seq: int, tokens: Sequence[int], start: int = 0) -> Logits | None:
        """Evaluate ``tokens[start:start + n_batch]`` of sequence ``seq`` (alone in its batch).

        ``start == 0`` clears the sequence first. Returns the last token's logits (a view, valid until the next
        decode) once the whole prompt is in, else None.
        """
        if start == 0:
            self.clear(seq)
        chunk = tokens[start : start + self.n_batch]
        last = start + len(chunk) >= len(tokens)
        pos = self.n_past[seq]
        self._fill([(seq, t, pos + i, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
        self._decode()
        self.n_past[seq] = pos + len(chunk)
        return self._row(len(chunk) - 1) if last else None

    def run(self, prompt: Sequence[int], decoder: SequenceDecoder, seq: int = 0) -> float:
        """Decode one sequence alone to its end, as the worker does for a request with no neighbours.

        Returns the seconds spent after the prompt was evaluated.
        """
        try:
            row = None
            for start in range(0, len(prompt), self.n_batch):
                row = self.prefill(seq, prompt, start)
            assert row is not None
            t0 = time.perf_counter()
            token = decoder.feed(row)
            while token is not None:
                token = decoder.feed(self.step([(seq, token)])[0])
            return time.perf_counter() - t0
        finally:
            self.clear(seq)

    def step(self, entries: Sequence[tuple[int, int]], pad: Sequence[int] = ()) -> Logits:
        """Decode one token for each ``(seq, token)`` in one ``llama_decode``; the logits rows, in order.

        ``pad``: unused sequence ids that get a throwaway token (no logits, forgotten right after), so that the
        step's sequence ids are contiguous. ``entries`` must be in ascending sequence order (so are the rows).
        """
        if any(a[0] >= b[0] for a, b in itertools.pairwise(entries)):
            raise ValueError("step entries must be in ascending sequence order")
        rows = [(seq, token, self.n_past[seq], True) for seq, token in entries]
        rows += [(seq, self.token_bos(), 0, False) for seq in pad]
        rows.sort(key=lambda row: row[0])
        self._fill(rows)
        try:
            self._decode()
        finally:
            for seq in pad:
                self.clear(seq)
        for seq, _ in entries:
            self.n_past[seq] += 1
        ptr = self.lc.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(len(entries), self.n_vocab))

    def _fill(self, rows: Sequence[tuple[int, int, int, bool]]) -> None:
        b = self._batch
        for i, (seq, token, pos, want) in enumerate(rows):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = want
        b.n_tokens = len(rows)

    def _decode(self) -> None:
        rc = self.lc.llama_decode(self.ctx, self._batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with {rc}")

    def _row(self, i: int) -> Logits:
        ptr = self.lc.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
