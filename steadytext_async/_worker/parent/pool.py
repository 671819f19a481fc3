"""A pool of llama.cpp worker processes with a shared decode-thread budget.

- Workers are spawned on demand (READY handshake), one model each, up to ``max_workers``. A worker is ready
  unbatched (capacity 1, a context of one sequence) and reports each change later (``BatchVerdict``, the whole new
  ``WorkerInfo``): its capacity grows once its wide context is built and its batching verdict known (cached, or
  from the self-test it runs while serving); ``start_timeout`` covers only the model load.
- At most ``min(max_workers, threads)`` workers decode at once, each up to its self-tested batch size of requests
  (``max_batch``; see ``_worker/child/batch.py``). With ``dispatch="spread"`` (the default) a new request starts on
  an idle worker, or a new one, while the thread budget has a core for it, and joins the least loaded decoding
  batch only when none can start (on the default SmolLM2, two 1-thread workers decode more than one 2-thread worker
  batching both: 1.39x at 2 concurrent); with ``dispatch="batch"`` it joins a decoding worker's batch while one has
  a free slot, and only then goes to another worker (docs/guide/batching.md has both measurements). The
  ``threads`` budget is split among decoding workers (not requests) and re-split when one starts or ends
  (``llama_set_n_threads`` between decode calls). A worker whose share shrinks must acknowledge before the newcomer
  starts, so running decode threads never exceed the budget.
- With a :class:`~steadytext_async._worker.parent.budget.HostBudget`, every decode thread also needs one host
  token, so all pools of all processes on the host together stay within the cores (how many threads the pool may use
  now: :class:`~steadytext_async._worker.parent.threads.ThreadBudget`). Joining a running batch needs no token (the
  worker's share does not change).
- Cancelling a request sends ``cancel``; a worker that does not acknowledge within ``cancel_timeout`` is killed.
- A worker that dies mid-request is replaced; the request is retried once (outputs are deterministic, so text
  already delivered is skipped and checked) and otherwise fails with :class:`WorkerError`.

One worker process, its READY handshake and its pipe are
:class:`~steadytext_async._worker.parent.handle.WorkerHandle`; this module is the dispatch. All methods run on one
event loop (the runtime loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence

from ..._config import FAILURE_TTL
from ..._errorwire import from_record
from ..._exceptions import ModelUnavailableError, WorkerError
from ..protocol import (
    Cancel,
    Cancelled,
    DoneFrame,
    ErrorFrame,
    FromWorker,
    Generate,
    GenParams,
    PieceFrame,
    SetThreads,
    Shutdown,
    WorkerConfig,
)
from .affinity import Affinity, anchors
from .budget import HostBudget
from .handle import Died, DiedEvent, Done, LoadFailed, WorkerHandle, WorkerInfo
from .threads import ThreadBudget, split

__all__ = ["Done", "Pool", "PoolStats", "WorkerHandle", "WorkerInfo"]

logger = logging.getLogger("steadytext_async")


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of a pool's counters (all zero for a pool not started yet)."""

    workers_alive: int = 0
    workers_busy: int = 0
    generations: int = 0  # completed
    respawns: int = 0  # workers that died unexpectedly and were replaced
    prefix_hits: int = 0  # generations that restored a kept prompt prefix
    prefix_tokens: int = 0  # prompt tokens they did not evaluate
    prefix_bytes: int = 0  # prefix state the live workers keep


class Pool:
    def __init__(
        self,
        *,
        max_workers: int,
        threads: int,
        n_ctx: int,
        n_batch: int,
        max_batch: int = 1,
        spread_first: bool = False,
        prefix_cache_bytes: int = 0,
        verdict_path: str | None = None,
        llama_log: bool = False,
        start_timeout: float = 120.0,
        cancel_timeout: float = 5.0,
        budget: HostBudget | None = None,
        spares: int = 0,
    ) -> None:
        self.max_workers = max_workers
        self.threads = threads
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.max_batch = max_batch
        self.spread_first = spread_first  # an idle (or new) worker before a decoding batch: see _acquire
        self.prefix_cache_bytes = prefix_cache_bytes
        self.affinity = Affinity()  # which worker holds which prompt prefix; prefix reuse counters
        self.verdict_path = verdict_path
        self.llama_log = llama_log
        self.start_timeout = start_timeout
        self.cancel_timeout = cancel_timeout
        self._workers: list[WorkerHandle] = []
        self._cond = asyncio.Condition()
        self._rebalance = asyncio.Lock()
        self._rids = itertools.count(1)
        self._seq = itertools.count(1)
        self._closed = False
        self._spawning = 0
        self._failed: dict[str, tuple[float, str]] = {}
        self._budget = ThreadBudget(threads, budget)
        self.spares = spares
        self._spare: WorkerHandle | None = None  # a loaded, idle worker outside max_workers (see _take_spare)
        self._spare_task: asyncio.Task[None] | None = None
        self.generations = 0  # completed generations (observable for tests and stats)
        self.respawns = 0  # workers that died unexpectedly
        self.peak_threads = 0  # highest sum of thread shares of decoding workers ever dispatched
        self.shrinks = 0  # acknowledged reductions of a running worker's share
        self.peak_batch = 0  # most requests one worker ever decoded at once

    # -- public ----------------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def max_active(self) -> int:
        return max(1, min(self.max_workers, self.threads))

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.alive]

    def stats(self) -> PoolStats:
        alive = [w for w in self._workers if w.alive]
        return PoolStats(
            workers_alive=len(alive),
            workers_busy=sum(1 for w in alive if w.busy),
            generations=self.generations,
            respawns=self.respawns,
            prefix_hits=self.affinity.hits,
            prefix_tokens=self.affinity.reused,
            prefix_bytes=self.affinity.held(alive),
        )

    def spare_pids(self) -> list[int]:
        """The warm spare's pid, once it is ready (``spares=1``)."""
        spare = self._spare
        return [spare.pid] if spare is not None and spare.alive else []

    async def preload(self, model_path: str, count: int | None = None) -> None:
        """Start workers for ``model_path`` (all slots by default) and wait until they are ready."""
        want = min(self.max_workers, count or self.max_workers)
        have = sum(1 for w in self._workers if w.alive and w.model_key == model_path)
        async with asyncio.TaskGroup() as tg:
            for _ in range(max(0, want - have)):
                tg.create_task(self._spawn_idle(model_path))

    async def stream(self, model_path: str, params: GenParams) -> AsyncIterator[PieceFrame | Done]:
        """Run one generation; yield its pieces as the worker sent them, then a final :class:`Done`."""
        delivered = ""
        for attempt in range(2):
            replay, replaying = "", bool(delivered)
            try:
                async for event in self._attempt(model_path, params):
                    if isinstance(event, PieceFrame):
                        if replaying:  # a retry: skip what the caller already has, checking it matches
                            replay += event.text
                            if len(replay) <= len(delivered):
                                if not delivered.startswith(replay):
                                    raise WorkerError("retried generation diverged from delivered text")
                                continue
                            if not replay.startswith(delivered):
                                raise WorkerError("retried generation diverged from delivered text")
                            event = dataclasses.replace(event, text=replay[len(delivered) :])
                            replaying = False
                        delivered += event.text
                    yield event
                return
            except Died as died:
                if attempt == 1:
                    raise WorkerError(f"worker died twice serving one request: {died}") from None
                logger.warning("worker died mid-request (%s); retrying on a fresh worker", died)

    async def aclose(self) -> None:
        self._closed = True
        self._budget.close()
        if self._spare_task is not None:
            self._spare_task.cancel()
            await asyncio.gather(self._spare_task, return_exceptions=True)
        workers, self._workers = self._workers, []
        if self._spare is not None:
            workers.append(self._spare)
            self._spare = None
        for w in workers:
            if w.alive:
                with contextlib.suppress(Died):
                    w.send(Shutdown())
        for w in workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 2.0)
            except TimeoutError:
                w.kill()
                await w.proc.wait()
            w.alive = False
            for t in w.tasks:
                t.cancel()
            await asyncio.gather(*w.tasks, return_exceptions=True)
        if self._budget.shared:  # the workers are gone: their host cores go back (a request may still have held one)
            self._budget.return_tokens(0)
        async with self._cond:
            self._cond.notify_all()

    def kill_all_now(self) -> None:
        """Synchronous last-resort cleanup (interpreter exit)."""
        for w in [*self._workers, *([self._spare] if self._spare is not None else [])]:
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(w.pid, signal.SIGKILL)

    def forget_after_fork(self) -> None:
        """In a forked child: this pool's workers and tokens are the parent's; drop them without touching them."""
        self._closed = True
        self._workers = []
        self._spare = self._spare_task = None
        self._budget.forget_after_fork()

    # -- one attempt -----------------------------------------------------------------------------------------
    async def _attempt(self, model_path: str, params: GenParams) -> AsyncIterator[PieceFrame | Done]:
        t_queued = time.perf_counter()
        keys = anchors(params) if self.prefix_cache_bytes else []
        worker = await self._acquire(model_path, keys)
        self.affinity.sent(worker, keys)
        queue_wait = time.perf_counter() - t_queued
        rid = next(self._rids)
        events = worker.streams[rid] = asyncio.Queue()
        finished = False
        try:
            worker.send(Generate(rid, params, n_threads=worker.threads))
            while True:
                msg = await events.get()
                if isinstance(msg, PieceFrame) and msg.rid == rid:
                    yield msg
                elif isinstance(msg, DoneFrame) and msg.rid == rid:
                    finished = True
                    self.generations += 1
                    self.affinity.done(worker, msg)
                    yield Done(msg.finish_reason, msg.usage, msg.timings, queue_wait, worker.info)
                    return
                elif isinstance(msg, ErrorFrame) and msg.rid == rid:
                    finished = True
                    raise from_record(msg.error, origin="worker")
                elif isinstance(msg, DiedEvent):
                    finished = True
                    raise Died(worker.crash_detail())
        finally:
            if not finished and worker.alive:
                await asyncio.shield(self._cancel(worker, rid, events))
            worker.streams.pop(rid, None)
            await asyncio.shield(self._release(worker))

    async def _cancel(self, worker: WorkerHandle, rid: int, events: asyncio.Queue[FromWorker | DiedEvent]) -> None:
        try:
            worker.send(Cancel(rid))
            async with asyncio.timeout(self.cancel_timeout):
                while True:
                    msg = await events.get()
                    if isinstance(msg, Cancelled | DoneFrame | ErrorFrame) and msg.rid == rid:
                        return
                    if isinstance(msg, DiedEvent):
                        return
        except (Died, TimeoutError):
            logger.warning("worker pid %s did not stop on cancel; killing it", worker.pid)
            worker.kill()

    # -- capacity and the thread budget ----------------------------------------------------------------------
    def _active(self) -> list[WorkerHandle]:
        return [w for w in self._workers if w.busy and w.alive]

    def _failure(self, model_path: str) -> str | None:
        failed = self._failed.get(model_path)
        if failed is None:
            return None
        if time.monotonic() - failed[0] >= FAILURE_TTL:
            del self._failed[model_path]
            return None
        return failed[1]

    async def _acquire(self, model_path: str, keys: Sequence[bytes] = ()) -> WorkerHandle:
        failure = self._failure(model_path)
        if failure is not None:
            raise ModelUnavailableError(failure)
        delay = 0.002
        async with self._cond:
            while True:
                if self._closed:
                    raise WorkerError("the pool is closed")
                active = len(self._active())
                joinable = [w for w in self._active() if w.model_key == model_path and w.active < w.capacity]
                # batch first: join a decoding worker (its thread share is unchanged), unless an idle one holds
                # more of the prompt's prefix; spread first: join only when no worker can start (see _can_spread)
                if (
                    joinable
                    and not self._idle_holder(model_path, keys, joinable, active)
                    and not (self.spread_first and self._can_spread(model_path, active))
                ):
                    # the one holding the request's prompt prefix first, then the least loaded
                    worker = min(joinable, key=lambda w: (-self.affinity.score(w, keys), w.active))
                    worker.active += 1
                    self.peak_batch = max(self.peak_batch, worker.active)
                    return worker
                if active < self.max_active and self._budget.has_token(active):  # then spread over workers
                    idle = [w for w in self._workers if w.alive and not w.busy and w.model_key == model_path]
                    if idle:
                        worker = max(idle, key=lambda w: self.affinity.score(w, keys))
                        break
                    alive = [w for w in self._workers if w.alive]
                    if len(alive) + self._spawning < self.max_workers:
                        # the lock is released while spawning: re-check capacity before using the new worker
                        await self._spawn_locked(model_path)
                        continue
                    other = [w for w in alive if not w.busy and w.model_key != model_path]
                    if other:
                        self._retire(other[0])
                        continue
                if active < self.max_active and self._budget.shared:
                    # every host token is taken (other pools or processes): poll while listening for our own
                    with self._budget.waiting(), contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._cond.wait()
                    delay = min(0.05, delay * 2)
                    continue
                await self._cond.wait()
            worker.active = 1
            self.peak_batch = max(self.peak_batch, 1)
            worker.threads = 0  # no share until _redistribute grants one
        try:
            await self._redistribute(newcomer=worker)
        except BaseException:
            await asyncio.shield(self._release(worker))
            raise
        return worker

    def _can_spread(self, model_path: str, active: int) -> bool:
        """True when a request may start on a worker of its own: a host token is free and a worker of its model is
        idle, or one more may be spawned. On a small model and few cores, two 1-thread workers decode more than one
        2-thread worker batching two sequences (docs/guide/batching.md has the figures), so ``dispatch="spread"``
        (the default) fills the workers before it batches; the bytes are the same either way."""
        if active >= self.max_active or not self._budget.has_token(active):
            return False
        alive = [w for w in self._workers if w.alive]
        idle = any(not w.busy and w.model_key == model_path for w in alive)
        return idle or len(alive) + self._spawning < self.max_workers

    def _idle_holder(self, model_path: str, keys: Sequence[bytes], joinable: list[WorkerHandle], active: int) -> bool:
        """True when an idle worker holds more of the request's prompt prefix than any joinable one, and may start:
        taking it evaluates less of the prompt and leaves no worker idle that batching would not."""
        if not keys:
            return False
        idle = [w for w in self._workers if w.alive and not w.busy and w.model_key == model_path]
        best = max((self.affinity.score(w, keys) for w in idle), default=0)
        if best <= max(self.affinity.score(w, keys) for w in joinable):
            return False
        return active < self.max_active and self._budget.has_token(active)

    async def _spawn_locked(self, model_path: str) -> WorkerHandle:
        self._spawning += 1
        self._cond.release()
        try:
            return await self._spawn(model_path)
        finally:
            await self._cond.acquire()
            self._spawning -= 1

    async def _release(self, worker: WorkerHandle) -> None:
        async with self._cond:
            worker.active = max(0, worker.active - 1)
            if worker.busy:  # still decoding others: its thread share stays
                self._cond.notify_all()
                return
            if not worker.alive:
                self._retire(worker)
            self._cond.notify_all()
        with contextlib.suppress(Exception):
            await self._redistribute(newcomer=None)

    async def _redistribute(self, newcomer: WorkerHandle | None) -> None:
        """Split the thread budget among active workers; shrink others (acknowledged) before a newcomer runs."""
        async with self._rebalance:
            active = self._active()
            others = [w for w in active if w is not newcomer]
            ordered = others + ([newcomer] if newcomer is not None else [])
            total = self._budget.total_for(len(ordered), newcomer is not None)
            shares = split(total, len(ordered)) if ordered else []
            waits: list[asyncio.Future[int]] = []
            for w, share in zip(ordered, shares, strict=True):
                if w is newcomer:
                    w.threads = share
                    continue
                if share == w.threads:
                    continue
                seq = next(self._seq)
                fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                w.acks[seq] = fut
                try:
                    w.send(SetThreads(seq, share))
                except Died:
                    w.acks.pop(seq, None)
                    continue
                if share < w.threads:
                    waits.append(fut)
                w.threads = share
            for fut in waits:
                with contextlib.suppress(Died):
                    await fut
                    self.shrinks += 1
            in_use = sum(w.threads for w in self._active() if w.alive)
            self.peak_threads = max(self.peak_threads, in_use)
            if newcomer is None and self._budget.shared:  # shrinks are acknowledged: surplus tokens can go back
                # A worker dispatched while the shrinks were awaited is active with no share yet (0 threads) and
                # holds the token it was dispatched with: counting it as 0 gave that token back, and its grant then
                # split the pool's threads over fewer tokens (3 threads on a 2-token host, seen in test_budget).
                self._budget.return_tokens(sum(max(w.threads, 1) for w in self._active() if w.alive))
            self._budget.watch(lambda: len(self._active()), lambda: self._redistribute(newcomer=None))

    def _retire(self, worker: WorkerHandle) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        worker.shutdown()

    # -- processes -------------------------------------------------------------------------------------------
    async def _spawn_idle(self, model_path: str) -> None:
        async with self._cond:
            if len([w for w in self._workers if w.alive]) + self._spawning >= self.max_workers:
                return
            await self._spawn_locked(model_path)
            self._cond.notify_all()

    async def _spawn(self, model_path: str) -> WorkerHandle:
        worker = self._take_spare(model_path)
        if worker is None:
            worker = await self._start(model_path)
        self._workers.append(worker)
        self._refill_spare(model_path)
        return worker

    # -- the warm spare ----------------------------------------------------------------------------------------
    # Starting a worker takes about a second (interpreter and imports, the weights, a context of one sequence; the
    # wide one is built after Ready); a pool with ``spares=1`` keeps one more worker loaded and idle (no thread
    # share, no requests), so a worker that dies is replaced at once, and a new spare is started in the background.
    def _take_spare(self, model_path: str) -> WorkerHandle | None:
        spare = self._spare
        if spare is None or not spare.alive or spare.model_key != model_path:
            return None
        self._spare = None
        return spare

    def _refill_spare(self, model_path: str) -> None:
        if self.spares < 1 or self._closed or (self._spare_task is not None and not self._spare_task.done()):
            return
        if self._spare is not None and self._spare.alive and self._spare.model_key == model_path:
            return
        self._spare_task = asyncio.get_running_loop().create_task(self._start_spare(model_path))

    async def _start_spare(self, model_path: str) -> None:
        try:
            spare = await self._start(model_path)
        except Exception as exc:  # the next spawn starts a worker the ordinary way
            logger.warning("could not start a spare worker: %s", exc)
            return
        old, self._spare = self._spare, spare
        if old is not None:
            old.shutdown()
        if self._closed:
            self._spare = None
            spare.shutdown()

    async def _start(self, model_path: str) -> WorkerHandle:
        cfg = WorkerConfig(
            model_path=model_path,
            n_ctx=self.n_ctx,
            n_batch=self.n_batch,
            n_threads=self.threads,
            llama_log=self.llama_log,
            max_batch=self.max_batch,
            verdict_path=self.verdict_path,
            prefix_cache_bytes=self.prefix_cache_bytes,
        )
        try:
            worker = await WorkerHandle.start(cfg, self.start_timeout, self._exited, self._changed)
        except LoadFailed as exc:
            failure = str(exc)
            self._failed[model_path] = (time.monotonic(), failure)
            raise ModelUnavailableError(failure) from None
        return worker

    async def _changed(self, worker: WorkerHandle) -> None:
        """A worker's capacity grew (its batching verdict): waiting requests may join it now."""
        async with self._cond:
            self._cond.notify_all()

    async def _exited(self, worker: WorkerHandle) -> None:
        """A worker's pipe closed (its waiters already know): drop it unless a request still reads from it; with a
        warm spare, the spare takes its place at once."""
        async with self._cond:
            if worker is self._spare:
                self._spare = None
                self._refill_spare(worker.model_key)
                return
            if worker in self._workers and not worker.busy:
                self._retire(worker)
            if not self._closed:
                self.respawns += 1
                alive = [w for w in self._workers if w.alive]
                if len(alive) + self._spawning < self.max_workers:
                    spare = self._take_spare(worker.model_key)
                    if spare is not None:
                        self._workers.append(spare)
                        self._refill_spare(worker.model_key)
            self._cond.notify_all()
