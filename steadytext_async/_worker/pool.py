"""A pool of llama.cpp worker processes with a shared decode-thread budget.

- Workers are spawned on demand (READY handshake), one model each, up to ``max_workers``.
- At most ``min(max_workers, threads)`` workers decode at once, each up to its self-tested batch size of requests
  (``max_batch``; see ``_worker/batch.py``): new requests go to another worker while the thread budget allows,
  then join the least loaded decoding worker's batch. The ``threads`` budget is split among decoding workers (not
  requests) and re-split when one starts or ends (``llama_set_n_threads`` between decode calls). A worker whose
  share shrinks must acknowledge before the newcomer starts, so running decode threads never exceed the budget.
- With a :class:`~steadytext_async._engine.budget.HostBudget`, every decode thread also needs one host token, so
  all pools of all processes on the host together stay within the cores. A pool holds tokens only while it has
  active requests; it takes spare tokens for a lone request only while no other pool waits. Joining a running
  batch needs no token (the worker's share does not change).
- Cancelling a request sends ``cancel``; a worker that does not acknowledge within ``cancel_timeout`` is killed.
- A worker that dies mid-request is replaced; the request is retried once (outputs are deterministic, so text
  already delivered is skipped and checked) and otherwise fails with :class:`WorkerError`.

All methods run on one event loop (the runtime loop).
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
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from .._engine.budget import HostBudget, Token
from .._exceptions import ConstraintError, ModelUnavailableError, WorkerError
from .protocol import (
    HEADER,
    Cancel,
    Cancelled,
    DoneFrame,
    ErrorFrame,
    Fatal,
    FromWorker,
    Generate,
    GenParams,
    Init,
    PieceFrame,
    Ready,
    SetThreads,
    Shutdown,
    ThreadsAck,
    ToWorker,
    WorkerConfig,
    child_argv,
    child_env,
    decode_body,
    decode_header,
    encode_frame,
)

__all__ = ["Done", "Pool", "WorkerInfo", "WorkerPiece"]

logger = logging.getLogger("steadytext_async")

FAILURE_TTL = 30.0  # a model that failed to load is retried after this many seconds


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerPiece:
    """A piece of text as it arrived from a worker (the pool side of the pipe)."""

    text: str
    token_ids: list[int]
    tokens: list[Any] | None  # (token_id, bytes, logprob, [(id, bytes, logprob), ...]) per token


@dataclasses.dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str
    usage: dict[str, int]
    timings: dict[str, float]
    queue_wait: float
    info: dict[str, Any]


WorkerInfo = dict[str, Any]


class _Died(Exception):
    pass


class _DiedEvent:
    """Queued for the request reading a worker's events when the worker's pipe closes."""


class WorkerHandle:
    """The pool's handle on one worker process (the child's side is ``_worker.child.Worker``)."""

    _ids = itertools.count(1)

    def __init__(self, proc: asyncio.subprocess.Process, model_key: str) -> None:
        self.id = next(self._ids)
        self.proc = proc
        self.model_key = model_key
        self.info: WorkerInfo = {}
        self.streams: dict[int, asyncio.Queue[FromWorker | _DiedEvent]] = {}  # by request id
        self.acks: dict[int, asyncio.Future[int]] = {}
        self.active = 0  # requests decoding here (up to ``capacity``, batched)
        self.alive = True
        self.threads = 0
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def busy(self) -> bool:
        return self.active > 0

    @property
    def capacity(self) -> int:
        """Requests this worker decodes at once: its self-test's batch size (1 = no batching)."""
        return max(1, int(self.info.get("max_batch", 1)))

    def send(self, msg: ToWorker) -> None:
        if not self.alive or self.proc.stdin is None:
            raise _Died
        try:
            self.proc.stdin.write(encode_frame(msg))
        except (BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
            raise _Died from exc

    def kill(self) -> None:
        self.alive = False
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def crash_detail(self) -> str:
        rc = self.proc.returncode
        tail = " | ".join(line for line in self.stderr_tail if line.strip())[-800:]
        return f"worker pid {self.pid} exited with {rc}" + (f"; stderr: {tail}" if tail else "")


class Pool:
    def __init__(
        self,
        *,
        max_workers: int,
        threads: int,
        n_ctx: int,
        n_batch: int,
        max_batch: int = 1,
        verdict_path: str | None = None,
        llama_log: bool = False,
        start_timeout: float = 120.0,
        cancel_timeout: float = 5.0,
        budget: HostBudget | None = None,
    ) -> None:
        self.max_workers = max_workers
        self.threads = threads
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.max_batch = max_batch
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
        self.budget = budget
        self._tokens: list[Token] = []
        self._watcher: asyncio.Task[None] | None = None
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

    async def preload(self, model_path: str, count: int | None = None) -> None:
        """Start workers for ``model_path`` (all slots by default) and wait until they are ready."""
        want = min(self.max_workers, count or self.max_workers)
        have = sum(1 for w in self._workers if w.alive and w.model_key == model_path)
        async with asyncio.TaskGroup() as tg:
            for _ in range(max(0, want - have)):
                tg.create_task(self._spawn_idle(model_path))

    async def stream(self, model_path: str, params: GenParams) -> AsyncIterator[WorkerPiece | Done]:
        """Run one generation; yield pieces then a final :class:`Done`."""
        delivered = ""
        for attempt in range(2):
            replay, replaying = "", bool(delivered)
            try:
                async for event in self._attempt(model_path, params):
                    if isinstance(event, WorkerPiece):
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
            except _Died as died:
                if attempt == 1:
                    raise WorkerError(f"worker died twice serving one request: {died}") from None
                logger.warning("worker died mid-request (%s); retrying on a fresh worker", died)

    async def aclose(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
        workers, self._workers = self._workers, []
        for w in workers:
            if w.alive:
                with contextlib.suppress(_Died):
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
        async with self._cond:
            self._cond.notify_all()

    def kill_all_now(self) -> None:
        """Synchronous last-resort cleanup (interpreter exit)."""
        for w in self._workers:
            with contextlib.suppress(ProcessLookupError, OSError):
                os.kill(w.pid, signal.SIGKILL)

    def forget_after_fork(self) -> None:
        """In a forked child: this pool's workers and tokens are the parent's; drop them without touching them."""
        self._closed = True
        self._workers = []
        if self.budget is not None:
            for token in self._tokens:
                self.budget.forget(token)
        self._tokens = []

    # -- one attempt -----------------------------------------------------------------------------------------
    async def _attempt(self, model_path: str, params: GenParams) -> AsyncIterator[WorkerPiece | Done]:
        t_queued = time.perf_counter()
        worker = await self._acquire(model_path)
        queue_wait = time.perf_counter() - t_queued
        rid = next(self._rids)
        events = worker.streams[rid] = asyncio.Queue()
        finished = False
        try:
            worker.send(Generate(rid, params, n_threads=worker.threads))
            while True:
                msg = await events.get()
                if isinstance(msg, PieceFrame) and msg.rid == rid:
                    yield WorkerPiece(msg.text, msg.token_ids, msg.tokens)
                elif isinstance(msg, DoneFrame) and msg.rid == rid:
                    finished = True
                    self.generations += 1
                    yield Done(msg.finish_reason, msg.usage, msg.timings, queue_wait, worker.info)
                    return
                elif isinstance(msg, ErrorFrame) and msg.rid == rid:
                    finished = True
                    if msg.kind == "ConstraintError":
                        raise ConstraintError(msg.message, partial_text=msg.partial_text or "")
                    raise WorkerError(f"worker failed: {msg.kind}: {msg.message}")
                elif isinstance(msg, _DiedEvent):
                    finished = True
                    raise _Died(worker.crash_detail())
        finally:
            if not finished and worker.alive:
                await asyncio.shield(self._cancel(worker, rid, events))
            worker.streams.pop(rid, None)
            await asyncio.shield(self._release(worker))

    async def _cancel(self, worker: WorkerHandle, rid: int, events: asyncio.Queue[FromWorker | _DiedEvent]) -> None:
        try:
            worker.send(Cancel(rid))
            async with asyncio.timeout(self.cancel_timeout):
                while True:
                    msg = await events.get()
                    if isinstance(msg, Cancelled | DoneFrame | ErrorFrame) and msg.rid == rid:
                        return
                    if isinstance(msg, _DiedEvent):
                        return
        except (_Died, TimeoutError):
            logger.warning("worker pid %s did not stop on cancel; killing it", worker.pid)
            worker.kill()

    # -- capacity and the thread budget ----------------------------------------------------------------------
    def _active(self) -> list[WorkerHandle]:
        return [w for w in self._workers if w.busy and w.alive]

    def _shares(self, k: int, total: int) -> list[int]:
        base, extra = divmod(total, k)
        return [base + (1 if i < extra else 0) for i in range(k)]

    def _budget_for(self, active: int, newcomer: bool) -> int:
        """Threads this pool may use now; takes or returns host tokens to match (returns happen later)."""
        if self.budget is None or active == 0:
            return self.threads if active else 0
        want = min(self.threads, max(active, len(self._tokens)))
        if newcomer and not self.budget.others_waiting():  # take spare cores while nobody else waits
            while len(self._tokens) < self.threads:
                token = self.budget.try_acquire()
                if token is None:
                    break
                self._tokens.append(token)
            want = min(self.threads, len(self._tokens))
        elif not newcomer and self.budget.others_waiting():
            want = active  # one thread each; the surplus goes back to the host
        return max(active, want)

    def _return_tokens(self, keep: int) -> None:
        assert self.budget is not None
        while len(self._tokens) > keep:
            self.budget.release(self._tokens.pop())

    def _failure(self, model_path: str) -> str | None:
        failed = self._failed.get(model_path)
        if failed is None:
            return None
        if time.monotonic() - failed[0] >= FAILURE_TTL:
            del self._failed[model_path]
            return None
        return failed[1]

    def _has_token(self, active: int) -> bool:
        """True when this pool holds (or just took) a host token for one more decoding worker."""
        if self.budget is None or len(self._tokens) > active:
            return True
        token = self.budget.try_acquire()
        if token is None:
            return False
        self._tokens.append(token)
        return True

    async def _acquire(self, model_path: str) -> WorkerHandle:
        failure = self._failure(model_path)
        if failure is not None:
            raise ModelUnavailableError(failure)
        delay = 0.002
        async with self._cond:
            while True:
                if self._closed:
                    raise WorkerError("the pool is closed")
                active = len(self._active())
                if active < self.max_active and self._has_token(active):  # spread over workers first
                    idle = [w for w in self._workers if w.alive and not w.busy and w.model_key == model_path]
                    if idle:
                        worker = idle[0]
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
                joinable = [w for w in self._active() if w.model_key == model_path and w.active < w.capacity]
                if joinable:  # then batch: join the least loaded decoding worker (its thread share is unchanged)
                    worker = min(joinable, key=lambda w: w.active)
                    worker.active += 1
                    self.peak_batch = max(self.peak_batch, worker.active)
                    return worker
                if active < self.max_active and self.budget is not None:
                    # every host token is taken (other pools or processes): poll while listening for our own
                    with self.budget.waiting(), contextlib.suppress(TimeoutError):
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
            total = self._budget_for(len(ordered), newcomer is not None)
            shares = self._shares(len(ordered), total) if ordered else []
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
                except _Died:
                    w.acks.pop(seq, None)
                    continue
                if share < w.threads:
                    waits.append(fut)
                w.threads = share
            for fut in waits:
                with contextlib.suppress(_Died):
                    await fut
                    self.shrinks += 1
            if newcomer is not None:
                in_use = sum(w.threads for w in self._active() if w.alive)
                self.peak_threads = max(self.peak_threads, in_use)
            elif self.budget is not None:  # shrinks are acknowledged: surplus tokens can go back
                self._return_tokens(sum(w.threads for w in self._active() if w.alive))
            if self.budget is not None and len(self._tokens) > len(self._active()) and self._watcher is None:
                self._watcher = asyncio.create_task(self._watch_surplus())

    async def _watch_surplus(self) -> None:
        """While this pool holds more tokens than it has requests, hand the extra back once another pool waits."""
        assert self.budget is not None
        try:
            while not self._closed and len(self._tokens) > len(self._active()):
                await asyncio.sleep(0.05)
                if self.budget.others_waiting():
                    await self._redistribute(newcomer=None)
        finally:
            self._watcher = None

    def _retire(self, worker: WorkerHandle) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        if worker.alive:
            with contextlib.suppress(_Died):
                worker.send(Shutdown())
            worker.alive = False

    # -- processes -------------------------------------------------------------------------------------------
    async def _spawn_idle(self, model_path: str) -> None:
        async with self._cond:
            if len([w for w in self._workers if w.alive]) + self._spawning >= self.max_workers:
                return
            await self._spawn_locked(model_path)
            self._cond.notify_all()

    async def _spawn(self, model_path: str) -> WorkerHandle:
        proc = await asyncio.create_subprocess_exec(
            *child_argv(),  # -P: the cwd is not on the worker's sys.path
            env=child_env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        worker = WorkerHandle(proc, model_path)
        worker.threads = self.threads
        cfg = WorkerConfig(
            model_path=model_path,
            n_ctx=self.n_ctx,
            n_batch=self.n_batch,
            n_threads=self.threads,
            llama_log=self.llama_log,
            max_batch=self.max_batch,
            verdict_path=self.verdict_path,
        )
        worker.send(Init(cfg))
        worker.tasks.append(asyncio.create_task(self._drain_stderr(worker)))
        try:
            async with asyncio.timeout(self.start_timeout):
                first = await self._read_frame(worker)
        except (TimeoutError, _Died, asyncio.IncompleteReadError, ValueError) as exc:
            worker.kill()
            await proc.wait()
            await asyncio.sleep(0)
            detail = worker.crash_detail()
            raise ModelUnavailableError(f"worker failed to start for {model_path}: {exc!r}; {detail}") from None
        if not isinstance(first, Ready):
            await proc.wait()
            message = first.message if isinstance(first, Fatal) else repr(first)
            failure = f"could not load model {model_path}: {message}"
            self._failed[model_path] = (time.monotonic(), failure)
            raise ModelUnavailableError(failure)
        worker.info = first.info
        worker.tasks.append(asyncio.create_task(self._pump(worker)))
        self._workers.append(worker)
        logger.debug("worker pid %s ready for %s", worker.pid, model_path)
        return worker

    async def _read_frame(self, worker: WorkerHandle) -> FromWorker:
        stdout = worker.proc.stdout
        assert stdout is not None
        header = await stdout.readexactly(HEADER.size)
        msg = decode_body(await stdout.readexactly(decode_header(header)))
        if isinstance(msg, Init | Generate | Cancel | SetThreads | Shutdown):
            raise ValueError("malformed frame from worker")
        return msg

    async def _pump(self, worker: WorkerHandle) -> None:
        try:
            while True:
                msg = await self._read_frame(worker)
                if isinstance(msg, ThreadsAck):
                    fut = worker.acks.pop(msg.seq, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg.n)
                elif isinstance(msg, PieceFrame | DoneFrame | ErrorFrame | Cancelled):
                    stream = worker.streams.get(msg.rid)
                    if stream is not None:
                        stream.put_nowait(msg)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        worker.alive = False
        await worker.proc.wait()
        for fut in worker.acks.values():
            if not fut.done():
                fut.set_exception(_Died())
        worker.acks.clear()
        for stream in worker.streams.values():
            stream.put_nowait(_DiedEvent())
        async with self._cond:
            if worker in self._workers and not worker.busy:
                self._retire(worker)
            self.respawns += 1 if not self._closed else 0
            self._cond.notify_all()

    async def _drain_stderr(self, worker: WorkerHandle) -> None:
        stderr = worker.proc.stderr
        assert stderr is not None
        while True:
            line = await stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            worker.stderr_tail.append(text)
            logger.debug("worker %s: %s", worker.pid, text)
