"""The worker's wide context, built beside the one-sequence context it starts with.

A worker reports Ready once its weights and a context of **one** sequence exist, and serves unbatched in it. Its
wide context (``max_batch`` sequences of ``n_ctx`` KV cells each: 754 MB for the default SmolLM2 at ``n_ctx=4096``
and ``max_batch=8``, which llama.cpp clears when it creates them, so page faults are most of the cost: 0.47 s
against 0.13 s for one sequence, measured in a worker) is built by :class:`ContextBuild` in a thread started right
after (with no cached batching verdict: once the self-test's verdict allows a batch). At its next step boundary
after the build the worker moves to it (:meth:`.batch.Batcher.move_to` carries the KV cells of a request in
flight) and widens to its batching verdict.

The bytes do not change: with ``kv_unified`` off every sequence has its own KV stream of ``n_ctx`` cells (the same
number in both contexts), so a sequence decodes alike in a context of one sequence and in one of many; a moved
sequence's cells are copied exactly (as a kept prompt prefix is, see :mod:`.prefix`).

Safety: a llama.cpp context never writes to the model it is created over (``llama_context`` holds a const reference;
reserving its graphs allocates only its own tensors), so creating one while another context decodes over the same
weights is safe; the thread does nothing else.

Threads: while the build runs, the worker decodes with one thread fewer than its share (:data:`HELD_BACK`), and
the build thread runs :data:`NICER` steps below the process's priority (Linux; elsewhere at the same priority).
Measured on 2 cores (SmolLM2, one process, decode and builds side by side):

- a 48-token generation took 0.45 s with 2 threads alone, 0.83 s with 2 threads while a build ran beside it (ggml's
  threads spin at every barrier and one of them lost its core to the build), 0.69 s with 1 thread; the build took
  about 0.4 s either way;
- a 24-token generation with 1 thread next to two builds (a pool's two workers start together): 1.12-1.22 s at the
  same priority, 0.44-0.46 s with the builds 10 steps nicer (0.39-0.43 s with no build); the builds took 1.2 s
  either way. 19 steps gained little more and would starve the build on a busy host (weight 15 against 1024).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable

from .llama import LlamaModel

__all__ = ["HELD_BACK", "NICER", "POLL", "ContextBuild"]

HELD_BACK = 1  # decode threads a worker leaves to its context build while it runs
NICER = 10  # nice steps the build thread takes below the process
POLL = 0.02  # seconds between an idle worker's looks at the build


class ContextBuild:
    """``build()`` run in a daemon thread; :meth:`result` hands over what it made, once."""

    def __init__(self, build: Callable[[], LlamaModel]) -> None:
        self._model: LlamaModel | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(build,), name="steadytext-widen", daemon=True)
        self._thread.start()

    def _run(self, build: Callable[[], LlamaModel]) -> None:
        if sys.platform == "linux":  # per-thread priority (elsewhere setpriority would renice the whole process)
            with contextlib.suppress(OSError):
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + NICER))
        try:
            self._model = build()
        except BaseException as exc:  # e.g. no memory for the KV cells: the worker stays unbatched
            self._error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> LlamaModel:
        """The built context (waits for the build); raises what the build raised. Call once: the caller owns it."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        model, self._model = self._model, None
        if model is None:
            raise RuntimeError("the wide context was already taken")
        return model

    def close(self) -> None:
        """Wait for the build and free what it made, unless it was taken (the worker is closing)."""
        self._thread.join()
        model, self._model = self._model, None
        if model is not None:
            model.close()
