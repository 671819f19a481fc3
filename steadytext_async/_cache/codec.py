"""Stored value format: zlib-compressed JSON of the chunks and the result (round-trips ±inf/NaN exactly)."""

from __future__ import annotations

import json
import zlib
from typing import Any

from .._models import Chunk, GenerationResult
from .base import CachedEntry

__all__ = ["CodecError", "decode_entry", "encode_entry"]

VALUE_VERSION = 1


class CodecError(ValueError):
    """A stored value that cannot be decoded (garbage, truncated, or another format version)."""


def encode_entry(entry: CachedEntry) -> bytes:
    doc = {
        "v": VALUE_VERSION,
        "chunks": [c.model_dump(mode="python") for c in entry.chunks],
        "result": entry.result.model_dump(mode="python"),
    }
    raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    return zlib.compress(raw.encode("utf-8", "surrogatepass"), 1)


def decode_entry(blob: bytes, *, model_sha256: str | None = None, created: float = 0.0, hits: int = 0) -> CachedEntry:
    try:
        doc: Any = json.loads(zlib.decompress(blob).decode("utf-8", "surrogatepass"))
        if not isinstance(doc, dict) or doc.get("v") != VALUE_VERSION:
            raise CodecError("unknown value format")
        chunks = tuple(Chunk.model_validate(c) for c in doc["chunks"])
        result = GenerationResult.model_validate(doc["result"])
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"undecodable cache value: {type(exc).__name__}") from exc
    if "".join(c.text for c in chunks) != result.text:
        raise CodecError("chunks do not add up to the result text")
    return CachedEntry(chunks=chunks, result=result, model_sha256=model_sha256, created=created, hits=hits)
