"""One sequence's token loop, with no model and no I/O: feed it logits, it says which token to evaluate next.

The worker (alone or batched), the structured-output tests and the structured benchmark all drive this one loop::

    dec = SequenceDecoder(vocab, max_new_tokens=24, sampler=Sampler(...))
    token = dec.feed(logits_of_the_prompt)   # None: finished (dec.finish_reason says why)
    while token is not None:
        token = dec.feed(logits_after(token))
    pieces = dec.take()                      # text released so far (also available after every feed)

``LlamaModel.run`` is that loop for one sequence alone; ``batch.Batcher`` runs it for many sequences at once.

A step: the matcher (if any) masks the logits and applies the completion rule, the sampler picks, the token's
bytes go through a :class:`TextAssembler` (whole UTF-8 characters, stop string cut out) and, if asked, its
logprob and top alternatives are read from the model's own (unmasked) logits row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from ..._exceptions import ConstraintError
from ..._textstream import Piece as TextPiece
from ..._textstream import TextAssembler
from ..protocol import TokenInfo
from .sampling import Logits, Sampler, log_softmax_at, top_alternatives

__all__ = ["Emitted", "Matcher", "SequenceDecoder", "Vocab"]

Pick = Callable[[Logits], int]
IsEnd = Callable[[int], bool]


class Vocab(Protocol):
    def piece(self, token: int) -> bytes: ...

    def is_end(self, token: int) -> bool: ...


class Matcher(Protocol):
    """What :class:`steadytext_async.structured.local.TokenMatcher` offers the loop."""

    @property
    def done(self) -> bool: ...

    @property
    def accepting(self) -> bool: ...

    @property
    def forced(self) -> bool: ...  # the budget rule steered the output to close within max_new_tokens

    @property
    def minimum(self) -> int | None: ...  # tokens of the shortest valid output, if known

    def choose(self, logits: Logits, pick: Pick, is_end: IsEnd, *, remaining: int | None = None) -> int | None: ...

    def advance(self, token: int) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Emitted:
    """Text released by the decoder, with the ids (and logprob records, if asked) of the tokens it covers."""

    text: str
    token_ids: list[int]
    tokens: list[TokenInfo] | None


class SequenceDecoder:
    def __init__(
        self,
        vocab: Vocab,
        *,
        max_new_tokens: int,
        sampler: Sampler,
        matcher: Matcher | None = None,
        stop: str | None = None,
        logprobs: bool = False,
        top_logprobs: int = 5,
    ) -> None:
        self.vocab = vocab
        self.max_new = max_new_tokens
        self.sampler = sampler
        self.matcher = matcher  # fed generated tokens only, never the prompt
        self.want_lp = logprobs
        self.top_n = top_logprobs
        self.asm = TextAssembler(None if matcher is not None else stop)
        self.ids: list[int] = []
        self.info: list[TokenInfo] = []
        self.finish_reason: str | None = None
        self._out: list[Emitted] = []

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def take(self) -> list[Emitted]:
        """The pieces released since the last call."""
        out, self._out = self._out, []
        return out

    def feed(self, logits: Logits) -> int | None:
        """Consume the logits of the last evaluated position (may be modified in place).

        Returns the token to evaluate next, or None once finished. Raises ConstraintError when the token budget
        runs out before a constrained output is complete.
        """
        if self.finished:
            return None
        if len(self.ids) >= self.max_new:
            self._finish("length")
            return None
        m = self.matcher
        raw = logits.copy() if self.want_lp and m is not None else logits  # logprobs: the model's own
        if m is not None:
            # masks in place when needed; closes the output early enough to finish within max_new
            token = m.choose(logits, self.sampler.pick, self.vocab.is_end, remaining=self.max_new - len(self.ids))
            if token is None:
                self._finish("constraint_forced" if m.forced else "constraint_complete")
                return None
            m.advance(token)
        else:
            token = self.sampler.pick(logits)
            if self.vocab.is_end(token):
                self._finish("eos")
                return None
        self.ids.append(token)
        data = self.vocab.piece(token)
        if self.want_lp:
            lp, lse = log_softmax_at(raw, token)
            tops = tuple((t, self.vocab.piece(t), v) for t, v in top_alternatives(raw, self.top_n, lse))
            self.info.append(TokenInfo(token, data, lp, tops))  # the wire's record: sent as is
        self._emit(self.asm.feed(len(self.ids) - 1, data))
        if self.asm.stopped:
            self._finish("stop_string")
            return None
        if len(self.ids) >= self.max_new:
            self._finish("length")
            return None
        return token

    def _emit(self, piece: TextPiece | None) -> None:
        if piece is None:
            return
        ids = [self.ids[i] for i in piece.token_indices]
        infos = [self.info[i] for i in piece.token_indices] if self.want_lp else None
        self._out.append(Emitted(piece.text, ids, infos))

    def _finish(self, reason: str) -> None:
        self._emit(self.asm.finish())
        m = self.matcher
        if m is not None and reason == "length":
            if m.accepting and m.forced:
                reason = "constraint_forced"
            elif m.done:
                reason = "constraint_complete"
            elif not m.accepting:
                self.finish_reason = "error"
                shortest = "" if m.minimum is None else f"; the shortest valid output is {m.minimum} tokens"
                raise ConstraintError(
                    f"max_new_tokens={self.max_new} ran out before the output satisfied the constraint{shortest}",
                    partial_text=self.text(),
                )
        self.finish_reason = reason

    def text(self) -> str:
        """Everything generated so far, decoded (what the caller has received plus anything held back)."""
        return b"".join(self.vocab.piece(t) for t in self.ids).decode("utf-8", "replace")
