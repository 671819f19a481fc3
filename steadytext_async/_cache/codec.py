"""Stored value format: zlib-compressed JSON of the chunks and the result (round-trips ±inf/NaN exactly).

sqlite stores :func:`encode_entry` bytes in a row that has the metadata; Redis stores the same bytes behind a
small tagged header (:func:`pack_entry`), so both give byte-identical hits.

A shared store is written by others: decompression is bounded (:data:`MAX_DECODED_BYTES`), a Redis value carries
an HMAC-SHA256 over its key and bytes when the cache has a shared secret (checked before anything is decoded), and
a decoded entry must belong to its key (a local result's ``inputs_sha256``) and its text to its ``output_sha256``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import struct
import zlib
from typing import Any

from .._models import Chunk, GenerationResult, sha256_text
from .base import CachedEntry

__all__ = ["FORMAT", "MAGIC", "CodecError", "decode_entry", "encode_entry", "pack_entry", "unpack_entry"]

VALUE_VERSION = 2  # 2: a chunk may carry tool_calls (a held-back call arrives as one chunk)
MAGIC = b"STCR"  # the tagged value (Redis): MAGIC, FORMAT, created, MAC, then encode_entry's bytes
FORMAT = 2  # 2: with the MAC field
_HEADER = struct.Struct(">4sBd32s")
_UNSIGNED = b"\x00" * 32  # the MAC field of a cache without a secret
# A prompt (up to the 63 MiB frame limit) is stored twice (fingerprint and its JSON escaping) plus the output:
# anything that inflates past this is not ours (a zlib bomb), and is refused without being inflated further.
MAX_DECODED_BYTES = 192 * 1024 * 1024


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
        doc: Any = json.loads(_inflate(blob).decode("utf-8", "surrogatepass"))
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


def _inflate(blob: bytes) -> bytes:
    inflater = zlib.decompressobj()
    raw = inflater.decompress(blob, MAX_DECODED_BYTES)
    if inflater.unconsumed_tail:
        raise CodecError(f"cache value inflates past {MAX_DECODED_BYTES} bytes")
    return raw


def _mac(secret: bytes, key: str, body: bytes) -> bytes:
    return hmac.new(secret, key.encode("utf-8") + b"\0" + body, hashlib.sha256).digest()


def pack_entry(entry: CachedEntry, *, key: str = "", secret: bytes | None = None) -> bytes:
    """The tagged value (Redis): header (with an HMAC of ``key`` and the value when ``secret`` is given), then
    exactly the :func:`encode_entry` bytes."""
    body = encode_entry(entry)
    mac = _mac(secret, key, _HEADER.pack(MAGIC, FORMAT, entry.created, _UNSIGNED) + body) if secret else _UNSIGNED
    return _HEADER.pack(MAGIC, FORMAT, entry.created, mac) + body


def unpack_entry(blob: bytes, *, key: str = "", secret: bytes | None = None) -> CachedEntry:
    """The entry in ``blob`` stored under ``key``; :class:`CodecError` for anything not written by this format,
    not signed with ``secret`` (when given), or not belonging to ``key`` and its own text."""
    if len(blob) < _HEADER.size:
        raise CodecError("truncated cache value")
    magic, version, created, mac = _HEADER.unpack_from(blob)
    if magic != MAGIC or version != FORMAT:
        raise CodecError(f"unknown value format {magic!r}/{version}")
    body = blob[_HEADER.size :]
    if secret and not hmac.compare_digest(
        mac, _mac(secret, key, _HEADER.pack(MAGIC, FORMAT, created, _UNSIGNED) + body)
    ):
        raise CodecError("value not signed with this cache's secret (or stored under another key)")
    entry = decode_entry(body, created=created)
    fp = entry.result.fingerprint
    if fp.provider == "local" and fp.inputs_sha256 is not None and key and fp.inputs_sha256 != key:
        raise CodecError("value stored under another request's key")
    if fp.output_sha256 != sha256_text(entry.result.text):
        raise CodecError("value text does not match its output_sha256")
    return dataclasses.replace(entry, model_sha256=fp.model_sha256)
