"""Token selection from a logits vector: greedy argmax, or seeded top-k -> min-p -> top-p sampling.

Implemented in numpy (not llama.cpp's sampler chain) so the rule is ours, documented and stable across
llama.cpp upgrades. The RNG is numpy's PCG64 seeded per request: same seed, same logits -> same tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Sampler", "log_softmax_at", "top_alternatives"]

Logits = npt.NDArray[np.float32]


class Sampler:
    def __init__(self, *, temperature: float, seed: int, top_k: int, top_p: float, min_p: float) -> None:
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.min_p = min_p
        self._rng = np.random.Generator(np.random.PCG64(seed & 0xFFFFFFFFFFFFFFFF))

    def pick(self, logits: Logits) -> int:
        if self.temperature == 0.0:
            return int(np.argmax(logits))
        n = logits.shape[0]
        k = n if self.top_k <= 0 else min(self.top_k, n)
        ids = np.argpartition(logits, n - k)[n - k :] if k < n else np.arange(n)
        vals = logits[ids].astype(np.float64)
        order = np.lexsort((ids, -vals))  # by logit descending, ties by token id: fully determined order
        ids, vals = ids[order], vals[order]
        scaled = (vals - vals[0]) / self.temperature
        probs = np.exp(scaled)
        probs /= probs.sum()
        keep = probs >= self.min_p * probs[0] if self.min_p > 0 else np.ones_like(probs, dtype=bool)
        if self.top_p < 1.0:
            cum = np.cumsum(probs)
            cutoff = int(np.searchsorted(cum, self.top_p, side="left")) + 1
            keep[cutoff:] = False
        keep[0] = True
        ids, probs = ids[keep], probs[keep]
        cum = np.cumsum(probs)
        u = self._rng.random() * cum[-1]
        choice = int(np.searchsorted(cum, u, side="right"))
        return int(ids[min(choice, len(ids) - 1)])


def _logsumexp(logits: Logits) -> float:
    x = logits.astype(np.float64)
    m = float(x.max())
    return m + float(np.log(np.exp(x - m).sum()))


def log_softmax_at(logits: Logits, token: int) -> tuple[float, float]:
    """(logprob of ``token``, the log-normaliser) under the model's untempered distribution."""
    lse = _logsumexp(logits)
    return float(logits[token]) - lse, lse


def top_alternatives(logits: Logits, k: int, lse: float) -> list[tuple[int, float]]:
    """The ``k`` most likely tokens as (token id, logprob), most likely first, ties by id."""
    if k <= 0:
        return []
    n = logits.shape[0]
    k = min(k, n)
    ids: Any = np.argpartition(logits, n - k)[n - k :]
    vals = logits[ids].astype(np.float64)
    order = np.lexsort((ids, -vals))
    return [(int(ids[i]), float(vals[i]) - lse) for i in order]
