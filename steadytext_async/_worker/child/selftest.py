"""Start-up self-test: the largest batch whose every sequence's logits are bitwise those of decoding it alone.

Probe prompts of mixed lengths (two of them cross a 256-cell KV boundary during the test, where llama.cpp's
padded attention width changes) are first decoded alone, greedily, recording a digest of every logits row. Then
they are decoded again with sequence ``i`` joining at step ``i``, so the batch grows 1, 2, ..., ``max_batch`` and
shrinks again as sequences finish. A sequence's first differing row was computed in a step of some size ``k``
(all its earlier rows matched, so its KV cells were identical); the verdict is one less than the smallest such
``k``, or ``max_batch`` if every row matched. A verdict below 2 means no batching.

The verdict is cached per (model file, llama.cpp build and system info, thread count, kernel settings) in a
small JSON file, so later worker starts skip the test. A worker never waits for the test: it serves unbatched (one
sequence per step, always identical) while :class:`PendingVerdict` advances the test one ``llama_decode`` at a
time between its own steps, in a small context of its own over the same weights, on the threads the worker's
requests hold; then the worker widens its batch. A lock file beside the verdict file lets one worker run the test
while others keep serving unbatched and re-read the file; a lock held past :data:`LOCK_PATIENCE` seconds (a stopped
process) is ignored and the test runs unlocked (the cost of a duplicate test, never a wait).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .llama import KERNEL, LlamaModel, Logits

__all__ = [
    "PROBE_CTX",
    "PROBE_LENGTHS",
    "PendingVerdict",
    "batch_verdict",
    "compare",
    "load_verdict",
    "run_alone",
    "run_staggered",
    "store_verdict",
    "verdict_key",
]

PROBE_VERSION = 1
PROBE_LENGTHS = (250, 9, 131, 40, 252, 17, 77, 201, 3, 120, 64, 30, 180, 11, 99, 5)
PROBE_STEPS = 10
PROBE_CTX = 512  # cells per sequence of the test's own context: the longest probe plus its steps, past 256 cells
LOCK_PATIENCE = 120.0  # seconds another holder may keep the lock before the test runs unlocked
RECHECK = 0.25  # seconds between looks at the verdict file while another worker tests
IDLE_GRACE = 1.0  # seconds a worker keeps the test's lock while idle (see PendingVerdict.pause)
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


Steps = Generator[None, None, Any]  # yields once after every llama_decode


def _prefill(model: LlamaModel, seq: int, prompt: list[int]) -> Generator[None, None, Logits]:
    row = None
    for start in range(0, len(prompt), model.n_batch):
        row = model.prefill(seq, prompt, start)
        yield
    assert row is not None
    return row


def _alone_steps(model: LlamaModel, prompts: Sequence[list[int]], steps: int) -> Generator[None, None, Digests]:
    out: Digests = []
    for prompt in prompts:
        row = yield from _prefill(model, 0, prompt)
        rows = [_digest(row)]
        for _ in range(steps - 1):
            row = model.step([(0, int(np.argmax(row)))])[0]
            rows.append(_digest(row))
            yield
        model.clear(0)
        out.append(rows)
    return out


def _staggered_steps(
    model: LlamaModel, prompts: Sequence[list[int]], steps: int, per_call: int
) -> Generator[None, None, tuple[Digests, list[list[int]]]]:
    digests: Digests = [[] for _ in prompts]
    sizes: list[list[int]] = [[] for _ in prompts]
    active: dict[int, int] = {}  # seq -> next token
    for tick in range(len(prompts) + steps):
        if tick < len(prompts):
            row = yield from _prefill(model, tick, prompts[tick])
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
            yield
        for seq in [s for s in active if len(digests[s]) >= steps]:
            del active[seq]
            model.clear(seq)
    return digests, sizes


def _drain(steps: Steps) -> Any:
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def run_alone(model: LlamaModel, prompts: Sequence[list[int]], steps: int) -> Digests:
    """Each prompt decoded by itself (sequence 0): ``steps`` digests each, the first from the prompt's logits."""
    result: Digests = _drain(_alone_steps(model, prompts, steps))
    return result


def run_staggered(
    model: LlamaModel, prompts: Sequence[list[int]], steps: int, per_call: int
) -> tuple[Digests, list[list[int]]]:
    """Sequence ``i`` joins at tick ``i``; each tick decodes every active sequence, ``per_call`` per llama_decode.

    Returns the digests and, per row, the number of tokens in the llama_decode call that produced it (1 for the
    prompt's row).
    """
    result: tuple[Digests, list[list[int]]] = _drain(_staggered_steps(model, prompts, steps, per_call))
    return result


def compare(alone: Digests, batched: Digests, sizes: list[list[int]]) -> list[tuple[int, int, int]]:
    """First differing row per sequence: (sequence, step, batch size of the call that produced it)."""
    out = []
    for seq, (a, b) in enumerate(zip(alone, batched, strict=True)):
        for step, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                out.append((seq, step, sizes[seq][step]))
                break
    return out


def verdict_steps(model: LlamaModel, max_batch: int, steps: int = PROBE_STEPS) -> Generator[None, None, int]:
    """:func:`batch_verdict`, one ``llama_decode`` per iteration; the verdict is the generator's return value."""
    k = min(max_batch, model.n_seq, len(PROBE_LENGTHS))
    if k < 2:
        return 1
    prompts = probe_prompts(model, PROBE_LENGTHS[:k])
    alone = yield from _alone_steps(model, prompts, steps)
    batched, sizes = yield from _staggered_steps(model, prompts, steps, per_call=k)
    bad = compare(alone, batched, sizes)
    return min(size for _, _, size in bad) - 1 if bad else k


def batch_verdict(model: LlamaModel, max_batch: int, steps: int = PROBE_STEPS) -> int:
    """The largest batch size (<= ``max_batch``, <= the model's sequences) that reproduced every probe bitwise."""
    verdict: int = _drain(verdict_steps(model, max_batch, steps))
    return verdict


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


def load_verdict(path: Path, key: str, limit: int) -> int | None:
    """The cached verdict for ``key``, or None; a value outside ``1..limit`` (a hand-edited or foreign file) is
    ignored, so the test runs again instead of batching more requests than were ever tested."""
    try:
        data = json.loads(path.read_text())
        value = data.get(key)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        return None
    return value


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


class PendingVerdict:
    """The self-test of a worker that is already serving: :meth:`step` advances it by at most one ``llama_decode``.

    ``open_context(k)`` gives a context of ``k`` sequences over the worker's weights (closed when the test ends).
    With a ``path``, a verdict another worker stores there is taken as soon as it appears; the test itself runs
    only while this object holds the lock beside the file (tried without waiting), or unlocked once the lock has
    been held by someone else for ``patience`` seconds or cannot be taken at all (a read-only directory).
    """

    def __init__(
        self,
        open_context: Callable[[int], LlamaModel],
        limit: int,
        *,
        path: Path | None = None,
        key: str = "",
        patience: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.open_context = open_context
        self.limit = limit
        self.path = path
        self.key = key
        self.patience = LOCK_PATIENCE if patience is None else patience
        self.clock = clock
        self.state = "waiting" if path is not None else "running"  # waiting (for the lock) -> running -> done
        self.verdict: int | None = None
        self.seconds = 0.0  # spent in the test's own decode calls
        self._since = clock()
        self._looked = float("-inf")
        self._stepped = self._since  # when the test last advanced
        self._lock: Any = None
        self._model: LlamaModel | None = None
        self._steps: Steps | None = None

    def step(self, threads: int) -> int | None:
        """Advance the test (``threads`` decode threads); the verdict once known, else None."""
        if self.state == "waiting" and not self._take_turn():
            return self.verdict
        t0 = time.perf_counter()
        self._stepped = self.clock()
        try:
            if self._steps is None:
                self._model = self.open_context(self.limit)
                self._steps = verdict_steps(self._model, self.limit)
            self._model.set_threads(threads)  # type: ignore[union-attr]
            next(self._steps)
        except StopIteration as stop:
            self._finish(int(stop.value), store=True)
        except Exception as exc:  # the test could not run (e.g. no memory for its context): no batching, not cached
            print(f"steadytext: batching self-test failed ({type(exc).__name__}: {exc}); not batching", file=sys.stderr)
            self._finish(1, store=False)
        self.seconds += time.perf_counter() - t0
        return self.verdict

    def poll(self) -> int | None:
        """For an idle worker: the verdict if another worker stored it meanwhile (a file read; no test step, no
        lock), else None."""
        if self.state == "waiting" and self.path is not None:
            cached = load_verdict(self.path, self.key, self.limit)
            if cached is not None:
                self._finish(cached, store=False)
        return self.verdict

    def pause(self) -> None:
        """The worker is idle (its threads are no longer its to use): after :data:`IDLE_GRACE` seconds without a
        step, hand the lock back so that another worker's test is not held up by this one's idle time (a short gap
        between requests keeps it: two workers would otherwise take turns and both run the whole test). The test
        keeps its place and resumes once this worker holds the lock again, unless another worker's verdict appears
        first."""
        if self.state == "running" and self._lock is not None and self.clock() - self._stepped >= IDLE_GRACE:
            self._lock.release()
            self._lock = None
            self.state = "waiting"
            self._looked = float("-inf")

    def close(self) -> None:
        """Give up (the worker is exiting): free the test's context and the lock."""
        if self.state != "done":
            self._finish(None, store=False)

    def _take_turn(self) -> bool:
        """True once this worker may run the test; sets the verdict if another worker stored it meanwhile."""
        assert self.path is not None
        now = self.clock()
        if now - self._looked < RECHECK:
            return False
        self._looked = now
        cached = load_verdict(self.path, self.key, self.limit)
        if cached is not None:
            self._finish(cached, store=False)
            return False
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path) + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0)
        except Timeout:
            if now - self._since < self.patience:
                return False
            print(
                f"steadytext: the batching self-test lock {lock.lock_file} was held for over {self.patience:.0f} s; "
                "testing without it",
                file=sys.stderr,
            )
        except OSError:
            pass
        else:
            self._lock = lock
            cached = load_verdict(self.path, self.key, self.limit)  # stored between our look and the lock
            if cached is not None:
                self._finish(cached, store=False)
                return False
        self.state = "running"
        return True

    def _finish(self, verdict: int | None, *, store: bool) -> None:
        self.state = "done"
        self.verdict = verdict
        if store and verdict is not None and self.path is not None:
            store_verdict(self.path, self.key, verdict)
        if self._steps is not None:
            self._steps.close()
            self._steps = None
        if self._model is not None:
            self._model.close()
            self._model = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
