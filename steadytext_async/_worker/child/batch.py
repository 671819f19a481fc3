"""Continuous batching inside one worker: up to ``slots`` requests decode together, each as if it were alone.

Every :meth:`Batcher.tick` does at most one prompt chunk (one request's prompt, alone in its ``llama_decode``, in
``n_batch`` pieces, so its batch split never depends on other traffic) and then one step: the next token of every
decoding request, at most ``per_call`` per ``llama_decode`` (the self-test's verdict). Requests join and leave
between ticks; a cancelled or finished request frees its sequence (KV cells removed) without touching the others.
:meth:`Batcher.move_to` moves every request to another context over the same weights between ticks (the worker's
one-sequence start context to its wide one, see :mod:`.widen`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from ..._errorwire import to_record
from ..protocol import DoneFrame, DoneTimings, DoneUsage, ErrorFrame, FromWorker, PieceFrame
from .decode import SequenceDecoder
from .governor import ThreadGovernor
from .llama import LlamaModel, Logits
from .prefix import PrefixStore

__all__ = ["Batcher"]


@dataclasses.dataclass(slots=True)
class _Slot:
    rid: int
    seq: int
    prompt: list[int]
    truncated: int
    decoder: SequenceDecoder
    filled: int = 0  # prompt tokens evaluated so far
    cached: int = 0  # of which restored from a kept prefix (see prefix.py)
    next_token: int | None = None
    t_start: float = dataclasses.field(default_factory=time.perf_counter)
    t_prompt: float = 0.0


class Batcher:
    def __init__(
        self,
        model: LlamaModel,
        *,
        slots: int,
        per_call: int,
        threads: int,
        send: Callable[[FromWorker], None],
        prefix: PrefixStore | None = None,
    ) -> None:
        self.model = model
        self.prefix = prefix  # kept prompt prefixes (None: reuse off)
        self.per_call = max(1, per_call)
        self.send = send
        self.free = list(range(min(slots, model.n_seq)))  # sequence ids not in use
        self.slots: dict[int, _Slot] = {}  # by rid, in admission order
        self.share = threads  # threads granted by the pool
        self.held_back = 0  # of which left to other work of this process (the wide context's build)
        self.n_threads = threads  # threads in use now (<= usable)
        self._govs: dict[int, ThreadGovernor] = {}
        self.fillers = 0  # filler tokens decoded to close gaps between sequence ids (observable for tests)

    # -- membership --------------------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return len(self.free)

    @property
    def busy(self) -> bool:
        return bool(self.slots)

    def admit(self, rid: int, prompt: list[int], truncated: int, decoder: SequenceDecoder) -> None:
        if not self.slots:
            # work after idleness: the full share's timings date from other conditions (e.g. the tail of a burst,
            # with the parent process busy), so measure it again; a stale slow sample kept a lone request on one
            # thread for hundreds of steps
            for gov in self._govs.values():
                gov.forget(self.usable)
        seq = min(self.free)  # lowest first: keeps the decoding sequences' ids contiguous (see _holes)
        self.free.remove(seq)
        slot = self.slots[rid] = _Slot(rid, seq, prompt, truncated, decoder)
        if self.prefix is not None:
            slot.filled = slot.cached = self.prefix.restore(seq, prompt)

    def cancel(self, rid: int) -> bool:
        """Drop request ``rid``; False if it is not running here."""
        slot = self.slots.get(rid)
        if slot is None:
            return False
        self._leave(slot)
        return True

    def widen(self, slots: int) -> None:
        """Decode up to ``slots`` requests together from now on (the self-test's verdict, after starting at 1)."""
        n = min(slots, self.model.n_seq)
        used = {s.seq for s in self.slots.values()}
        self.free = sorted(set(self.free) | (set(range(n)) - used))
        self.per_call = max(1, slots)

    def move_to(self, model: LlamaModel) -> None:
        """Serve from ``model`` (a sibling context over the same weights, at least as many sequences) from now on.

        Every request keeps its sequence id: its KV cells are copied over (a prompt half evaluated, or a decode in
        progress, goes on from the same position with the same cells, so with the same bytes), and its decoder
        reads the vocabulary from ``model``. The prefix store is its owner's to repoint (kept states load into any
        context; the worker may have detached it from the batcher). Raises RuntimeError, with nothing changed here,
        if a state does not load.
        """
        old = self.model
        if model.n_seq < old.n_seq or model.n_ctx != old.n_ctx:
            raise ValueError(f"cannot move {old.n_seq}x{old.n_ctx} sequences to a {model.n_seq}x{model.n_ctx} context")
        for slot in self.slots.values():
            if old.n_past[slot.seq]:
                model.load_state(slot.seq, old.save_state(slot.seq, old.state_size(slot.seq)), old.n_past[slot.seq])
        for slot in self.slots.values():
            slot.decoder.vocab = model
        model.set_threads(self.n_threads)
        self.model = model

    def _leave(self, slot: _Slot) -> None:
        del self.slots[slot.rid]
        self.model.clear(slot.seq)
        self.free.append(slot.seq)

    # -- threads -----------------------------------------------------------------------------------------------
    @property
    def usable(self) -> int:
        """Threads the decode steps may use now: the share, less any held back (never below one)."""
        return max(1, self.share - self.held_back)

    def set_share(self, share: int) -> None:
        """Accept a new grant from the pool; never keep using more threads than granted."""
        self.share = share
        self._fit_threads()

    def hold_back(self, n: int) -> None:
        """Leave ``n`` threads of the share to other work of this process until called again with 0."""
        self.held_back = n
        self._fit_threads()

    def _fit_threads(self) -> None:
        if self.n_threads > self.usable:
            self._use_threads(self.usable)

    def _use_threads(self, n: int) -> None:
        if n != self.n_threads:
            self.model.set_threads(n)
            self.n_threads = n

    def _gov(self, k: int) -> ThreadGovernor:
        gov = self._govs.get(k)
        if gov is None:
            gov = self._govs[k] = ThreadGovernor()
        return gov

    # -- work --------------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """One prompt chunk (if a request is waiting for one) and one decode step of the decoding requests."""
        pending = next((s for s in self.slots.values() if s.filled < len(s.prompt)), None)
        if pending is not None:
            self._prefill(pending)
        decoding = sorted((s for s in self.slots.values() if s.next_token is not None), key=lambda s: s.seq)
        n_calls = -(-len(decoding) // self.per_call)
        for i in range(n_calls):  # balanced chunks: 8 with per_call 7 -> 4 + 4
            self._step(decoding[i * len(decoding) // n_calls : (i + 1) * len(decoding) // n_calls])

    def _prefill(self, slot: _Slot) -> None:
        self._use_threads(self._gov(1).best(self.usable))
        try:
            row = self.model.prefill(slot.seq, slot.prompt, slot.filled)
        except Exception as exc:
            self._fail(slot, exc)
            return
        slot.filled = min(len(slot.prompt), slot.filled + self.model.n_batch)
        if row is None and self.prefix is not None and slot.filled == self.prefix.boundary(slot.prompt):
            self.prefix.keep(slot.seq, slot.prompt[: slot.filled])
        if row is not None:
            slot.t_prompt = time.perf_counter()
            self._feed(slot, row)

    def _step(self, chunk: list[_Slot]) -> None:
        gov = self._gov(len(chunk))
        n = gov.choose(self.usable)
        self._use_threads(n)
        t0 = time.perf_counter()
        try:
            rows = self.model.step([(s.seq, s.next_token or 0) for s in chunk], pad=self._holes(chunk))
        except Exception as exc:
            for slot in chunk:
                self._fail(slot, exc)
            return
        gov.record(n, time.perf_counter() - t0)
        for slot, row in zip(chunk, rows, strict=True):
            self._feed(slot, row)

    def _holes(self, chunk: list[_Slot]) -> list[int]:
        """The free sequence ids between the chunk's first and last one, to fill with a throwaway token.

        llama.cpp evaluates a step as one micro-batch only when its sequence ids are contiguous and ascending; at
        every gap it starts another, and each costs about as much as decoding one sequence alone. A filler token
        (no logits) in a free sequence closes the gap for the price of one more row; other rows do not depend on
        it (batch invariance, checked by the self-test up to ``per_call``). Gaps held by a request still
        evaluating its prompt cannot be filled: that step is left to split.
        """
        lo, hi = chunk[0].seq, chunk[-1].seq
        if hi - lo + 1 == len(chunk) or hi - lo + 1 > self.per_call:
            return []
        used = {s.seq for s in chunk}
        holes = [q for q in range(lo, hi + 1) if q not in used]
        free = set(self.free)
        if not all(q in free for q in holes):
            return []
        self.fillers += len(holes)
        return holes

    def _feed(self, slot: _Slot, row: Logits) -> None:
        dec = slot.decoder
        try:
            slot.next_token = dec.feed(row)
        except Exception as exc:
            self._flush(slot)
            self._fail(slot, exc)
            return
        self._flush(slot)
        if dec.finish_reason is not None:
            self._leave(slot)
            t_end = time.perf_counter()
            usage = DoneUsage(
                prompt_tokens=len(slot.prompt),
                completion_tokens=len(dec.ids),
                prompt_tokens_truncated=slot.truncated,
                prompt_tokens_cached=slot.cached,
            )
            timings = DoneTimings(
                prompt_eval=slot.t_prompt - slot.t_start,
                decode=t_end - slot.t_prompt,
                n_threads=self.n_threads,
                max_batch=self.per_call,  # only ever grows: the widest batch this request could be in
                kernel=self.model.kernel,  # the context it finished in (a moved request: same bytes in either)
            )
            held = self.prefix.held if self.prefix is not None else 0
            self.send(DoneFrame(slot.rid, dec.finish_reason, usage, timings, prefix_bytes=held))

    def _flush(self, slot: _Slot) -> None:
        for piece in slot.decoder.take():
            self.send(PieceFrame(slot.rid, piece.text, piece.token_ids, piece.tokens))

    def _fail(self, slot: _Slot, exc: BaseException) -> None:
        if slot.rid in self.slots:
            self._leave(slot)
        self.send(ErrorFrame(slot.rid, to_record(exc)))
