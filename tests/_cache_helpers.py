"""Factories shared by the cache tests (no tests here): streams, results and entries as a generation makes them."""

from __future__ import annotations

import random
from typing import Any

from steadytext_async._cache import CachedEntry, StreamItem
from steadytext_async._models import Chunk, Fingerprint, GenerationResult, TokenLogprob, TopLogprob, sha256_text

__all__ = ["entry", "fingerprint", "stream_items"]


def fingerprint(**overrides: Any) -> Fingerprint:
    """A valid fingerprint; keys the current Fingerprint does not have are dropped (the model is still evolving)."""
    values: dict[str, Any] = {
        "package_version": "0",
        "provider": "local",
        "model": "m",
        "model_sha256": "a" * 64,
        "prompt": "p",
        "max_new_tokens": 64,
        "eos_string": "[EOS]",
        "temperature": 0.0,
        "seed": 42,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "logprobs": False,
        "output_sha256": "0" * 64,
        **overrides,
    }
    return Fingerprint(**{k: v for k, v in values.items() if k in Fingerprint.model_fields})


def stream_items(
    text: str = "the quick brown fox", *, fallback: bool = False, logprobs: bool = True, pad: int = 0
) -> list[StreamItem]:
    """Chunks (one per word, with token ids and optional logprobs) then the final result, like a live stream.

    ``pad`` appends that many incompressible characters (for byte-limit tests).
    """
    if pad:
        text = text + " " + random.Random(text).randbytes(pad // 2).hex()
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    chunks: list[Chunk] = []
    for i, piece in enumerate(pieces):
        tokens = None
        if logprobs:
            raw = list(piece.encode())
            top = [TopLogprob(token=piece, token_id=i, bytes=raw, logprob=-0.5 - i)]
            tokens = [TokenLogprob(token=piece, token_id=i, bytes=raw, logprob=-0.5 - i, top_logprobs=top)]
        chunks.append(Chunk(text=piece, token_ids=[i, i + 100], logprob=-0.5 - i if logprobs else None, tokens=tokens))
    provider = "fallback" if fallback else "local"
    result = GenerationResult(
        text=text,
        token_ids=[t for c in chunks for t in c.token_ids],
        logprobs=[t for c in chunks for t in (c.tokens or [])] if logprobs else None,
        finish_reason="eos",
        provider=provider,
        model="m",
        fallback=fallback,
        fingerprint=fingerprint(
            provider=provider,
            model_sha256=None if fallback else "a" * 64,
            logprobs=logprobs,
            fallback=fallback,
            output_sha256=sha256_text(text),  # a stored value must match its text (issue 25 M7)
        ),
    )
    return [*chunks, result]


def entry(text: str, *, logprobs: bool = False, pad: int = 0) -> CachedEntry:
    """A stored entry for ``text``."""
    items = stream_items(text, logprobs=logprobs, pad=pad)
    result = items[-1]
    assert isinstance(result, GenerationResult)
    chunks = tuple(c for c in items if isinstance(c, Chunk))
    return CachedEntry(chunks=chunks, result=result, model_sha256="a" * 64, created=1.0)
