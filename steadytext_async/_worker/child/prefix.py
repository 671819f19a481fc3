"""Deterministic prompt-prefix reuse: keep the KV state of chunk-aligned prompt prefixes, restore the longest match.

A prompt is always evaluated in ``n_batch`` chunks aligned to token 0 (:meth:`.llama.LlamaModel.prefill`), so the
KV cells of its first k whole chunks depend only on those ``k * n_batch`` tokens: restored from a copy they are the
same bytes as computed afresh, and every later chunk is evaluated with the same split over the same inputs. The
store keeps, per evaluated prompt, the state of its longest chunk-aligned prefix that leaves at least one token to
evaluate (the last chunk yields the logits the decoder needs); a new prompt restores the longest kept prefix it
shares at a chunk boundary, in any sequence, and evaluates only the rest. ``benchmarks/prefix_identity.py`` and
``tests/test_prefix_reuse.py`` check the bytes (text, token ids, logprobs) with reuse on and off.

Memory: the states' bytes never exceed ``cap`` (least recently used states are dropped first; a state bigger than
the cap is not kept). A kept prefix that is itself a prefix of a newer one is dropped: the newer serves it too.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .llama import SeqState

__all__ = ["PrefixStore"]


class StateModel(Protocol):
    """What the store needs of :class:`.llama.LlamaModel`."""

    n_batch: int

    def state_size(self, seq: int) -> int: ...

    def save_state(self, seq: int, size: int) -> SeqState: ...

    def load_state(self, seq: int, state: SeqState, keep: int) -> None: ...


@dataclasses.dataclass(slots=True)
class _Kept:
    tokens: list[int]  # the prefix (a whole number of chunks)
    state: SeqState


class PrefixStore:
    def __init__(self, model: StateModel, *, cap: int) -> None:
        self.model = model
        self.grid = model.n_batch
        self.cap = cap
        self._kept: collections.OrderedDict[int, _Kept] = collections.OrderedDict()  # oldest use first
        self._ids = 0
        self.held = 0  # bytes of kept states (never above ``cap``)
        self.peak = 0  # highest ``held`` ever (observable for tests)
        self.hits = 0  # prompts that restored a prefix
        self.reused = 0  # prompt tokens restored instead of evaluated

    def __len__(self) -> int:
        return len(self._kept)

    def boundary(self, tokens: list[int]) -> int:
        """The longest chunk-aligned prefix of ``tokens`` that leaves at least one token to evaluate."""
        return (len(tokens) - 1) // self.grid * self.grid

    def restore(self, seq: int, tokens: list[int]) -> int:
        """Load into ``seq`` the longest kept prefix of ``tokens``; how many tokens it covers (0: none)."""
        best, best_n = None, 0
        limit = self.boundary(tokens)
        for key, kept in reversed(self._kept.items()):  # most recent first: it wins ties
            n = min(limit, len(kept.tokens))
            while n > best_n and tokens[:n] != kept.tokens[:n]:
                n -= self.grid
            if n > best_n:
                best, best_n = key, n
        if best is None:
            return 0
        self._kept.move_to_end(best)
        try:
            self.model.load_state(seq, self._kept[best].state, best_n)
        except RuntimeError:
            self._drop(best)
            return 0
        self.hits += 1
        self.reused += best_n
        return best_n

    def keep(self, seq: int, tokens: list[int]) -> None:
        """Remember ``seq``'s state, which holds exactly ``tokens`` (a whole number of chunks) evaluated by prefill."""
        if self.cap <= 0 or not tokens or len(tokens) % self.grid:
            return
        for key, kept in list(self._kept.items()):
            if kept.tokens[: len(tokens)] == tokens:  # already kept (inside a longer prefix): just refresh it
                self._kept.move_to_end(key)
                return
            if tokens[: len(kept.tokens)] == kept.tokens:  # the new state serves this one's requests too
                self._drop(key)
        size = self.model.state_size(seq)
        if size > self.cap:
            return
        while self.held + size > self.cap:
            self._drop(next(iter(self._kept)))
        try:
            state = self.model.save_state(seq, size)
        except (RuntimeError, MemoryError):  # not kept: the request goes on as if reuse were off
            return
        self._ids += 1
        self._kept[self._ids] = _Kept(list(tokens), state)
        self.held += size
        self.peak = max(self.peak, self.held)

    def _drop(self, key: int) -> None:
        self.held -= len(self._kept.pop(key).state)
