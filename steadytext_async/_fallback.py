"""Deterministic hash-based text used when no model can be loaded.

The words are drawn from a SHA-256 stream keyed on (prompt, seed, max_new_tokens), one word per "token", so the same
inputs always give the same text and different seeds give different text. It is never cached as model output and
every result built from it carries ``fallback=True``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

__all__ = ["FALLBACK_VERSION", "fallback_words"]

FALLBACK_VERSION = 1

_WORDS = tuple(
    (
        "the of and to in is was for on are with as by at from that this be it an or which have not had but "
        "all were when there can more been one will their has would each about out many then them these so "
        "some her make like him into time look two write go see number way could people than first water "
        "long down day did get come made may part over new sound take only little work know place year live "
        "back give most very after thing just name good sentence man think say great where help through much "
        "before line right too mean old any same tell boy follow came want show also around form three small "
        "set put end does another well large must big even such because turn here why ask went men read need "
        "land different home us move try kind hand picture again change off play spell air away animal house "
        "point page letter mother answer found study still learn should world high every near add food "
        "between own below country plant last school father keep tree"
    ).split()
)


def fallback_words(prompt: str, seed: int, max_new_tokens: int) -> Iterator[str]:
    """Yield ``max_new_tokens`` pieces (a leading space before all but the first word)."""
    key = hashlib.sha256(f"steadytext-fallback/{FALLBACK_VERSION}\0{seed}\0{max_new_tokens}\0{prompt}".encode())
    block = b""
    counter = 0
    for i in range(max_new_tokens):
        if len(block) < 2:
            h = key.copy()
            h.update(counter.to_bytes(8, "big"))
            block += h.digest()
            counter += 1
        index = int.from_bytes(block[:2], "big") % len(_WORDS)
        block = block[2:]
        word = _WORDS[index]
        yield word if i == 0 else " " + word
