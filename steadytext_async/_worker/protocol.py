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
import sys
from pathlib import Path
from typing import Any

from .._exceptions import InvalidRequestError

__all__ = [
    "HEADER",
    "MAX_FRAME",
    "MAX_PROMPT_BYTES",
    "child_argv",
    "child_env",
    "decode_header",
    "encode_frame",
    "read_frame_fd",
    "write_frame_fd",
]

HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20
# Prompts are checked against this before any work (``_validate``), leaving room for the rest of a request frame.
MAX_PROMPT_BYTES = MAX_FRAME - (1 << 20)


def child_argv() -> list[str]:
    """The worker's command line. ``-P``: the current directory is *not* put on ``sys.path``, so a planted
    ``llama_cpp.py`` (or any module) in a writable cwd cannot run inside the worker."""
    return [sys.executable, "-P", "-m", "steadytext_async._worker.child"]


def child_env() -> dict[str, str] | None:
    """The worker's environment: inherited, except that when this package is only importable because it sits in
    the current directory (a source checkout, not installed), that directory is named explicitly in PYTHONPATH."""
    package_root = Path(__file__).resolve().parents[2]
    if package_root != Path.cwd().resolve() or ("" not in sys.path and str(package_root) not in sys.path):
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), env.get("PYTHONPATH", "")) if p)
    return env


def encode_frame(msg: tuple[Any, ...]) -> bytes:
    """One frame; a message over :data:`MAX_FRAME` raises InvalidRequestError (the reader would reject it)."""
    body = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_FRAME:
        raise InvalidRequestError(f"a {msg[0]!r} frame of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
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
