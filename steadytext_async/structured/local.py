"""Worker-side enforcement: llguidance token masks for a loaded llama.cpp model.

One :class:`MatcherFactory` per worker builds the llguidance tokenizer from the model's vocabulary once (≈3 s for
gemma-3's 262k tokens) and caches a compiled matcher per ``Constraint.sha256``; each request gets a fresh copy,
fed only generated tokens (never the prompt). The decode loop does, per step::

    token = m.choose(logits, sampler.pick, is_end, remaining=max_new - i)   # None: complete, stop here
    if token is None: finish = "constraint_forced" if m.forced else "constraint_complete"; break
    m.advance(token)

The completion rule: the output ends when the grammar admits nothing more, or when it is complete (``accepting``)
and the model's own choice -- picked from the unmasked logits -- is an end token or a token that cannot continue
it. Otherwise the logits are masked and the choice is made among the tokens that keep the output on course; end
tokens are among them exactly when the output is complete. Without the second half, an open-ended output (a
top-level number, ``[0-9]+``) would run on until ``max_new_tokens``: base models rarely emit their end token
right after an answer, they emit a newline, which the grammar forbids.

The budget rule: given ``remaining`` (tokens left, this one included), the output is complete within the budget
whenever the budget allows it at all. The matcher knows the shortest completion from its current state
(:mod:`.completion`); while the budget is far from it, nothing changes. Near it, every token the model picks is
checked: if the shortest completion after it still fits in what is left, the token stands; otherwise the first
token of the current shortest completion is taken instead and ``forced`` becomes True. Output that completes on
its own within the budget is therefore never changed, and a budget below the shortest valid output
(``minimum``) is the only way to run out (then nothing is steered: the partial text is the model's own).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from llguidance import LLMatcher, LLTokenizer

from .._exceptions import ConstraintError, InvalidRequestError
from ._constraint import Constraint
from .completion import Budget, Completer
from .grammar import grammar_for

__all__ = ["MatcherFactory", "TokenMatcher"]

logger = logging.getLogger("steadytext_async")


class TokenMatcher:
    """The constraint's state for one generation: masks logits, decides the end, follows the chosen tokens."""

    def __init__(
        self, matcher: LLMatcher, n_vocab: int, completer: Completer | None = None, plan: list[int] | None = None
    ) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._bits: npt.NDArray[np.int32] = np.zeros(((n_vocab + 31) // 32,), dtype=np.int32)
        self._fresh = False
        self._budget = None if completer is None else Budget(completer, plan)
        self.minimum: int | None = None if plan is None else len(plan)
        """Tokens in the shortest valid output (from the start state); None when unknown."""
        self.forced = False
        """True once a token was overridden to finish within the budget."""

    @property
    def accepting(self) -> bool:
        """The tokens so far form a complete output (end tokens are allowed now)."""
        return self._matcher.is_accepting()

    @property
    def done(self) -> bool:
        """The output is complete and nothing can follow it."""
        return self._matcher.is_stopped() and not self._matcher.is_error()

    def _compute(self) -> None:
        if not self._fresh:
            self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
            if self._matcher.is_error():
                raise ConstraintError(f"constraint matcher failed: {self._matcher.get_error()}")
            self._fresh = True

    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next."""
        self._compute()
        return 0 <= token < self._n_vocab and bool((int(self._bits[token >> 5]) >> (token & 31)) & 1)

    def mask(self, logits: npt.NDArray[np.float32]) -> None:
        """Set every token that may not come next to ``-inf``, in place (``logits`` is one row)."""
        self._compute()
        n = min(logits.shape[0], self._n_vocab)
        blocked = np.unpackbits(np.invert(self._bits.view(np.uint8)), count=n, bitorder="little")
        np.copyto(logits[:n], np.float32(-np.inf), where=blocked.view(np.bool_))
        logits[n:] = -np.inf

    def choose(
        self,
        logits: npt.NDArray[np.float32],
        pick: Callable[[npt.NDArray[np.float32]], int],
        is_end: Callable[[int], bool],
        *,
        remaining: int | None = None,
    ) -> int | None:
        """The next token by ``pick`` under the completion rule, or None when the output ends here.

        ``logits`` may be masked in place. ``pick`` is called at most once (it may draw from a seeded RNG).
        ``remaining`` (tokens left, this one included) turns on the budget rule.
        """
        if self.done:
            return None
        if self.accepting:
            token = pick(logits)
            if is_end(token) or not self.allows(token):
                return None
        else:
            self.mask(logits)
            token = pick(logits)
        if remaining is None or self._budget is None:
            return token
        plan = self._budget.near(self._matcher, remaining)
        if plan is None or len(plan) > remaining:  # far from the budget, or too late to fit: the model's choice
            return token
        if (plan and plan[0] == token) or self._budget.fits(self._matcher, token, remaining - 1):
            return token
        self.forced = True
        return plan[0] if plan else None

    def advance(self, token: int) -> None:
        """Consume a generated (non-end) token; raises ConstraintError if it may not come next."""
        self._fresh = False
        if not self._matcher.consume_token(token):
            raise ConstraintError(f"token {token} violates the constraint: {self._matcher.get_error()}")
        if self._budget is not None:
            self._budget.advanced(self._matcher, token)


class MatcherFactory:
    """Per-worker source of :class:`TokenMatcher`: one tokenizer, compiled constraints cached by sha256.

    Each cached entry keeps the compiled matcher in its start state and the shortest valid output's tokens.
    """

    def __init__(self, llm: Any, *, cache_size: int = 64) -> None:
        """Build the tokenizer from ``llm`` (a loaded ``llama_cpp.Llama``); all of its end tokens end output."""
        import llama_cpp
        from llguidance.llamacpp import lltokenizer_from_vocab

        t0 = time.perf_counter()
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = int(llm.n_vocab())
        self.end_tokens = self._end_tokens(llama_cpp, vocab, self.n_vocab)
        with warnings.catch_warnings():  # llguidance calls llama_token_get_attr, deprecated, once per token
            warnings.simplefilter("ignore", DeprecationWarning)
            self.tokenizer: LLTokenizer = lltokenizer_from_vocab(vocab, n_vocab=self.n_vocab, eos_token=self.end_tokens)
        self.completer = Completer(self.tokenizer, self.end_tokens)
        self._cache: OrderedDict[str, tuple[LLMatcher, list[int] | None]] = OrderedDict()
        self._cache_size = cache_size
        self.build_seconds = time.perf_counter() - t0
        logger.debug("structured: tokenizer built in %.2fs, end tokens %s", self.build_seconds, self.end_tokens)

    @staticmethod
    def _end_tokens(llama_cpp: Any, vocab: Any, n_vocab: int) -> list[int]:
        is_eog = llama_cpp.llama_vocab_is_eog
        return [token for token in range(n_vocab) if is_eog(vocab, token)]

    def _compiled(self, constraint: Constraint) -> tuple[LLMatcher, list[int] | None]:
        key = constraint.sha256
        entry = self._cache.get(key)
        if entry is not None:
            self._cache.move_to_end(key)
            return entry
        t0 = time.perf_counter()
        compiled = LLMatcher(self.tokenizer, grammar_for(constraint), log_level=0)
        if compiled.is_error():
            raise InvalidRequestError(f"cannot enforce constraint: {compiled.get_error()}")
        entry = (compiled, self.completer.walk(compiled))
        self._cache[key] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        logger.debug("structured: compiled %s constraint in %.1f ms", constraint.kind, 1e3 * (time.perf_counter() - t0))
        return entry

    def matcher(self, constraint: Constraint) -> TokenMatcher:
        """A fresh matcher in the constraint's start state."""
        compiled, shortest = self._compiled(constraint)
        return TokenMatcher(compiled.deep_copy(), self.n_vocab, self.completer, shortest)

    def shortest(self, constraint: Constraint) -> list[int] | None:
        """The token ids of the shortest valid output for ``constraint`` (None when none was found)."""
        shortest = self._compiled(constraint)[1]
        return None if shortest is None else list(shortest)

    def is_cached(self, constraint: Constraint) -> bool:
        """Whether ``constraint`` is compiled already."""
        return constraint.sha256 in self._cache
