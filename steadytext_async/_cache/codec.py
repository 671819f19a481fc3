"""Stored value format: zlib-compressed JSON of the chunks and the result (round-trips ±inf/NaN exactly).

sqlite stores :func:`encode_entry` bytes in a row that has the metadata; Redis stores the same bytes behind a
small tagged header (:func:`pack_entry`), so both give byte-identical hits.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from typing import Any

from .._models import Chunk, GenerationResult
from .base import CachedEntry

__all__ = ["FORMAT", "MAGIC", "CodecError", "decode_entry", "encode_entry", "pack_entry", "unpack_entry"]

VALUE_VERSION = 1
MAGIC = b"STCR"  # the tagged value (Redis): MAGIC, FORMAT, created, then encode_entry's bytes
FORMAT = 1
_HEADER = struct.Struct(">4sBd")


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


def pack_entry(entry: CachedEntry) -> bytes:
    """The tagged value (Redis): header, then exactly the :func:`encode_entry` bytes."""
    return _HEADER.pack(MAGIC, FORMAT, entry.created) + encode_entry(entry)


def unpack_entry(blob: bytes) -> CachedEntry:
    """The entry in ``blob``; :class:`CodecError` for anything not written by this format."""
    if len(blob) < _HEADER.size:
        raise CodecError("truncated cache value")
    magic, version, created = _HEADER.unpack_from(blob)
    if magic != MAGIC or version != FORMAT:
        raise CodecError(f"unknown value format {magic!r}/{version}")
    entry = decode_entry(blob[_HEADER.size :], created=created)
    return dataclasses.replace(entry, model_sha256=entry.result.fingerprint.model_sha256)
