"""Start-up self-test: the largest batch whose every sequence's logits are bitwise those of decoding it alone.

Probe prompts of mixed lengths (two of them cross a 256-cell KV boundary during the test, where llama.cpp's
padded attention width changes) are first decoded alone, greedily, recording a digest of every logits row. Then
they are decoded again with sequence ``i`` joining at step ``i``, so the batch grows 1, 2, ..., ``max_batch`` and
shrinks again as sequences finish. A sequence's first differing row was computed in a step of some size ``k``
(all its earlier rows matched, so its KV cells were identical); the verdict is one less than the smallest such
``k``, or ``max_batch`` if every row matched. A verdict below 2 means no batching.

The verdict is cached per (model file, llama.cpp build and system info, thread count, kernel settings) in a
small JSON file, so later worker starts skip the test; a lock file beside it lets one worker run the test (with all
of its threads) while workers starting at the same time wait for its verdict.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .llama import KERNEL, LlamaModel, Logits

__all__ = ["PROBE_LENGTHS", "batch_verdict", "compare", "exclusive", "run_alone", "run_staggered", "verdict_key"]

PROBE_VERSION = 1
PROBE_LENGTHS = (250, 9, 131, 40, 252, 17, 77, 201, 3, 120, 64, 30, 180, 11, 99, 5)
PROBE_STEPS = 10
_TEXT = (
    "The river town woke slowly. Bakers lit their ovens before dawn, fishermen checked their nets, and the old "
    "clock above the market hall struck six. Children ran along the quay while gulls argued over scraps. In the "
    "library, a clerk sorted letters from distant cities: a request for maps, a bill for lamp oil, a poem about "
    "the sea. Numbers filled the ledgers: 17 barrels, 342 bricks, 9 horses, 1,024 nails. "
)

Digests = list[list[bytes]]


def _digest(row: Logits) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest()


def probe_prompts(model: LlamaModel, lengths: Sequence[int]) -> list[list[int]]:
    ids = model.tokenize(_TEXT.encode(), add_bos=True, special=False)
    body = ids[1:]
    while len(ids) < max(lengths):
        ids += body
    return [ids[:n] for n in lengths]


def _prefill(model: LlamaModel, seq: int, prompt: list[int]) -> Logits:
    row = None
    for start in range(0, len(prompt), model.n_batch):
        row = model.prefill(seq, prompt, start)
    assert row is not None
    return row


def run_alone(model: LlamaModel, prompts: Sequence[list[int]], steps: int) -> Digests:
    """Each prompt decoded by itself (sequence 0): ``steps`` digests each, the first from the prompt's logits."""
    out: Digests = []
    for prompt in prompts:
        row = _prefill(model, 0, prompt)
        rows = [_digest(row)]
        for _ in range(steps - 1):
            row = model.step([(0, int(np.argmax(row)))])[0]
            rows.append(_digest(row))
        model.clear(0)
        out.append(rows)
    return out


def run_staggered(
    model: LlamaModel, prompts: Sequence[list[int]], steps: int, per_call: int
) -> tuple[Digests, list[list[int]]]:
    """Sequence ``i`` joins at tick ``i``; each tick decodes every active sequence, ``per_call`` per llama_decode.

    Returns the digests and, per row, the number of tokens in the llama_decode call that produced it (1 for the
    prompt's row).
    """
    digests: Digests = [[] for _ in prompts]
    sizes: list[list[int]] = [[] for _ in prompts]
    active: dict[int, int] = {}  # seq -> next token
    for tick in range(len(prompts) + steps):
        if tick < len(prompts):
            row = _prefill(model, tick, prompts[tick])
            digests[tick].append(_digest(row))
            sizes[tick].append(1)
            active[tick] = int(np.argmax(row))
        entries = sorted((seq, tok) for seq, tok in active.items() if len(digests[seq]) < steps)
        for at in range(0, len(entries), per_call):
            chunk = entries[at : at + per_call]
            rows = model.step(chunk)
            for (seq, _), row in zip(chunk, rows, strict=True):
                digests[seq].append(_digest(row))
                sizes[seq].append(len(chunk))
                active[seq] = int(np.argmax(row))
        for seq in [s for s in active if len(digests[s]) >= steps]:
            del active[seq]
            model.clear(seq)
    return digests, sizes


def compare(alone: Digests, batched: Digests, sizes: list[list[int]]) -> list[tuple[int, int, int]]:
    """First differing row per sequence: (sequence, step, batch size of the call that produced it)."""
    out = []
    for seq, (a, b) in enumerate(zip(alone, batched, strict=True)):
        for step, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                out.append((seq, step, sizes[seq][step]))
                break
    return out


def batch_verdict(model: LlamaModel, max_batch: int, steps: int = PROBE_STEPS) -> int:
    """The largest batch size (<= ``max_batch``, <= the model's sequences) that reproduced every probe bitwise."""
    k = min(max_batch, model.n_seq, len(PROBE_LENGTHS))
    if k < 2:
        return 1
    prompts = probe_prompts(model, PROBE_LENGTHS[:k])
    alone = run_alone(model, prompts, steps)
    batched, sizes = run_staggered(model, prompts, steps, per_call=k)
    bad = compare(alone, batched, sizes)
    return min(size for _, _, size in bad) - 1 if bad else k


def verdict_key(model_path: str, info: dict[str, Any], threads: int, max_batch: int, n_batch: int) -> str:
    st = os.stat(model_path)
    parts = {
        "probe": PROBE_VERSION,
        "model": [os.path.realpath(model_path), st.st_size, st.st_mtime_ns],
        "llama_cpp_python": info.get("llama_cpp_python_version"),
        "system_info": info.get("llama_cpp_system_info"),
        "cpu": info.get("cpu"),
        "threads": threads,
        "kernel": KERNEL,
        "max_batch": max_batch,
        "n_batch": n_batch,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """A host-wide lock beside the verdict file: one self-test at a time (the others then read its verdict).

    Where the lock cannot be taken (a read-only cache directory), the test runs unlocked.
    """
    from filelock import FileLock

    lock = FileLock(str(path) + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def load_verdict(path: Path, key: str) -> int | None:
    try:
        data = json.loads(path.read_text())
        value = data.get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def store_verdict(path: Path, key: str, value: int) -> None:
    """Merge ``key: value`` into the file (atomic replace; a lost race only costs a repeated self-test)."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[key] = value
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".batch-verdict-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, sort_keys=True)
        os.replace(tmp, path)
