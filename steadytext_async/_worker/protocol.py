"""Frames between the pool and a worker process: 4-byte big-endian length + pickle of a tuple.

Parent -> child: ``("init", cfg)``, ``("gen", rid, params)``, ``("cancel", rid)``, ``("threads", seq, n)``,
``("shutdown",)``.
Child -> parent: ``("ready", info)``, ``("fatal", message)``, ``("piece", rid, text, token_ids, tokens)``,
``("done", rid, finish_reason, usage, timings)``, ``("error", rid, kind, message)``,
``("error", rid, "ConstraintError", message, partial_text)``, ``("cancelled", rid)``,
``("threads_ok", seq, n)``.
Only our own child writes to the pipe, so pickle is safe here.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

__all__ = ["HEADER", "decode_header", "encode_frame", "read_frame_fd", "write_frame_fd"]

HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20


def encode_frame(msg: tuple[Any, ...]) -> bytes:
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def decode_header(header: bytes) -> int:
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes exceeds the {MAX_FRAME} limit")
    return int(size)


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame_fd(fd: int) -> tuple[Any, ...] | None:
    """Blocking read of one frame; None at end of file."""
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    body = _read_exact(fd, decode_header(header))
    if body is None:
        return None
    msg = pickle.loads(body)
    if not isinstance(msg, tuple):
        raise ValueError("malformed frame")
    return msg


def write_frame_fd(fd: int, msg: tuple[Any, ...]) -> None:
    data = memoryview(encode_frame(msg))
    while data:
        written = os.write(fd, data)
        data = data[written:]
