import itertools

import numpy as np
import numpy.typing as npt

from steadytext_async._worker.child.sampling import Sampler, log_softmax_at, top_alternatives


def logits(seed: int = 0, n: int = 1000) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


def test_greedy_is_argmax_and_ignores_seed() -> None:
    x = logits()
    a = Sampler(temperature=0.0, seed=1, top_k=40, top_p=0.95, min_p=0.05)
    b = Sampler(temperature=0.0, seed=2, top_k=40, top_p=0.95, min_p=0.05)
    assert a.pick(x) == b.pick(x) == int(np.argmax(x))


def test_sampling_is_reproducible_per_seed_and_differs_across_seeds() -> None:
    x = logits() * np.float32(0.2)  # flat distribution: many candidates

    def draw(seed: int) -> list[int]:
        s = Sampler(temperature=0.7, seed=seed, top_k=40, top_p=0.95, min_p=0.0)
        return [s.pick(x) for _ in range(50)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_sampling_respects_top_k() -> None:
    x = logits() * np.float32(0.01)
    allowed = set(np.argsort(-x)[:3].tolist())
    s = Sampler(temperature=1.0, seed=3, top_k=3, top_p=1.0, min_p=0.0)
    assert {s.pick(x) for _ in range(200)} <= allowed


def test_logprobs_normalise() -> None:
    x = logits()
    lp, lse = log_softmax_at(x, 5)
    probs = np.exp(x.astype(np.float64) - lse)
    assert abs(probs.sum() - 1.0) < 1e-9
    assert abs(lp - np.log(probs[5])) < 1e-9
    tops = top_alternatives(x, 5, lse)
    assert [t for t, _ in tops] == np.argsort(-x)[:5].tolist()
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(tops))
