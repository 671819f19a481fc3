"""Worker-side enforcement: llguidance token masks for a loaded llama.cpp model.

One :class:`MatcherFactory` per worker builds the llguidance tokenizer from the model's vocabulary once (≈3 s for
gemma-3's 262k tokens) and caches a compiled matcher per ``Constraint.sha256``; each request gets a fresh copy,
fed only generated tokens (never the prompt). The decode loop does, per step::

    token = m.choose(logits, sampler.pick, is_end)   # None: the output is complete, stop here
    if token is None: finish = "constraint_complete"; break
    m.advance(token)

The completion rule: the output ends when the grammar admits nothing more, or when it is complete (``accepting``)
and the model's own choice -- picked from the unmasked logits -- is an end token or a token that cannot continue
it. Otherwise the logits are masked and the choice is made among the tokens that keep the output on course; end
tokens are among them exactly when the output is complete. Without the second half, an open-ended output (a
top-level number, ``[0-9]+``) would run on until ``max_new_tokens``: base models rarely emit their end token
right after an answer, they emit a newline, which the grammar forbids.
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
from .grammar import grammar_for

__all__ = ["MatcherFactory", "TokenMatcher"]

logger = logging.getLogger("steadytext_async")


class TokenMatcher:
    """The constraint's state for one generation: masks logits, decides the end, follows the chosen tokens."""

    def __init__(self, matcher: LLMatcher, n_vocab: int) -> None:
        self._matcher = matcher
        self._n_vocab = n_vocab
        self._bits: npt.NDArray[np.int32] = np.zeros(((n_vocab + 31) // 32,), dtype=np.int32)
        self._fresh = False

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
    ) -> int | None:
        """The next token by ``pick`` under the completion rule, or None when the output ends here.

        ``logits`` may be masked in place. ``pick`` is called at most once (it may draw from a seeded RNG).
        """
        if self.done:
            return None
        if self.accepting:
            token = pick(logits)
            return None if is_end(token) or not self.allows(token) else token
        self.mask(logits)
        return pick(logits)

    def advance(self, token: int) -> None:
        """Consume a generated (non-end) token; raises ConstraintError if it may not come next."""
        self._fresh = False
        if not self._matcher.consume_token(token):
            raise ConstraintError(f"token {token} violates the constraint: {self._matcher.get_error()}")


class MatcherFactory:
    """Per-worker source of :class:`TokenMatcher`: one tokenizer, compiled constraints cached by sha256."""

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
        self._cache: OrderedDict[str, LLMatcher] = OrderedDict()
        self._cache_size = cache_size
        self.build_seconds = time.perf_counter() - t0
        logger.debug("structured: tokenizer built in %.2fs, end tokens %s", self.build_seconds, self.end_tokens)

    @staticmethod
    def _end_tokens(llama_cpp: Any, vocab: Any, n_vocab: int) -> list[int]:
        is_eog = llama_cpp.llama_vocab_is_eog
        return [token for token in range(n_vocab) if is_eog(vocab, token)]

    def _compiled(self, constraint: Constraint) -> LLMatcher:
        key = constraint.sha256
        compiled = self._cache.get(key)
        if compiled is not None:
            self._cache.move_to_end(key)
            return compiled
        t0 = time.perf_counter()
        compiled = LLMatcher(self.tokenizer, grammar_for(constraint), log_level=0)
        if compiled.is_error():
            raise InvalidRequestError(f"cannot enforce constraint: {compiled.get_error()}")
        self._cache[key] = compiled
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        logger.debug("structured: compiled %s constraint in %.1f ms", constraint.kind, 1e3 * (time.perf_counter() - t0))
        return compiled

    def matcher(self, constraint: Constraint) -> TokenMatcher:
        """A fresh matcher in the constraint's start state."""
        return TokenMatcher(self._compiled(constraint).deep_copy(), self.n_vocab)

    def is_cached(self, constraint: Constraint) -> bool:
        """Whether ``constraint`` is compiled already."""
        return constraint.sha256 in self._cache
