"""The pool side of one llama.cpp worker process: spawn with the READY handshake, read frames, route them.

- :meth:`WorkerHandle.start` spawns ``python -P -m steadytext_async._worker.child``, sends ``Init`` and waits for
  ``Ready`` (or ``Fatal``: :class:`LoadFailed`, which the pool remembers for a while).
- A pump task then routes the worker's frames: ``ThreadsAck`` to the future waiting for it, ``BatchVerdict`` into
  :attr:`WorkerHandle.info` (the worker's capacity), every other frame to the queue of the request it belongs to. When
  the pipe closes, every waiter gets :class:`Died` (futures) or a :class:`DiedEvent` (queues), and the owner's
  ``on_exit`` callback runs.
- A second task keeps the last lines of the worker's stderr for crash messages.

The child's side of the pipe is :class:`steadytext_async._worker.child.worker.Worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from ..._exceptions import ModelUnavailableError
from ..protocol import (
    HEADER,
    BatchVerdict,
    Cancelled,
    DoneFrame,
    DoneTimings,
    DoneUsage,
    ErrorFrame,
    Fatal,
    FromWorker,
    Init,
    PieceFrame,
    Ready,
    Shutdown,
    ThreadsAck,
    ToWorker,
    WorkerConfig,
    WorkerInfo,
    child_argv,
    child_env,
    decode_from_worker,
    decode_header,
    encode_frame,
)

__all__ = ["Died", "DiedEvent", "Done", "LoadFailed", "WorkerHandle", "WorkerInfo"]

logger = logging.getLogger("steadytext_async")


@dataclasses.dataclass(frozen=True, slots=True)
class Done:
    finish_reason: str
    usage: DoneUsage
    timings: DoneTimings
    queue_wait: float
    info: WorkerInfo  # the worker's, when the request finished


class Died(Exception):
    """The worker's pipe is closed (raised by :meth:`WorkerHandle.send` and set on pending acknowledgements)."""


class DiedEvent:
    """Queued for the request reading a worker's events when the worker's pipe closes."""


class LoadFailed(Exception):
    """The worker started but could not load its model (its ``Fatal`` message, as the failure to report)."""


class WorkerHandle:
    """The pool's handle on one worker process (the child's side is ``_worker.child.worker.Worker``)."""

    _ids = itertools.count(1)
    info: WorkerInfo  # from its Ready, set by start() before anyone else sees the handle

    def __init__(self, proc: asyncio.subprocess.Process, model_key: str) -> None:
        self.id = next(self._ids)
        self.proc = proc
        self.model_key = model_key
        self.streams: dict[int, asyncio.Queue[FromWorker | DiedEvent]] = {}  # by request id
        self.acks: dict[int, asyncio.Future[int]] = {}
        self.active = 0  # requests decoding here (up to ``capacity``, batched)
        self.alive = True
        self.threads = 0
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def start(
        cls,
        cfg: WorkerConfig,
        start_timeout: float,
        on_exit: Callable[[WorkerHandle], Awaitable[None]],
        on_change: Callable[[WorkerHandle], Awaitable[None]] | None = None,
    ) -> WorkerHandle:
        """Spawn a worker for ``cfg`` and wait for its READY; ``on_exit`` runs once its pipe has closed,
        ``on_change`` after its :attr:`info` changed (its batching verdict arrived)."""
        proc = await asyncio.create_subprocess_exec(
            *child_argv(),  # -P: the cwd is not on the worker's sys.path
            env=child_env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        worker = cls(proc, cfg.model_path)
        worker.threads = cfg.n_threads
        worker.send(Init(cfg))
        worker.tasks.append(asyncio.create_task(worker._drain_stderr()))
        try:
            async with asyncio.timeout(start_timeout):
                first = await worker._read_frame()
        except (TimeoutError, Died, asyncio.IncompleteReadError, ValueError) as exc:
            worker.kill()
            await proc.wait()
            await asyncio.sleep(0)
            detail = worker.crash_detail()
            raise ModelUnavailableError(f"worker failed to start for {cfg.model_path}: {exc!r}; {detail}") from None
        if not isinstance(first, Ready):
            await proc.wait()
            message = f"{first.error.kind}: {first.error.message}" if isinstance(first, Fatal) else repr(first)
            raise LoadFailed(f"could not load model {cfg.model_path}: {message}")
        worker.info = first.info
        worker.tasks.append(asyncio.create_task(worker._pump(on_exit, on_change)))
        logger.debug("worker pid %s ready for %s", worker.pid, cfg.model_path)
        return worker

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def busy(self) -> bool:
        return self.active > 0

    @property
    def capacity(self) -> int:
        """Requests this worker decodes at once: its self-test's batch size (1 = no batching)."""
        return max(1, self.info.max_batch)

    def send(self, msg: ToWorker) -> None:
        if not self.alive or self.proc.stdin is None:
            raise Died
        try:
            self.proc.stdin.write(encode_frame(msg))
        except (BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
            raise Died from exc

    def shutdown(self) -> None:
        """Ask the worker to exit (if it is still alive) and stop using it."""
        if self.alive:
            with contextlib.suppress(Died):
                self.send(Shutdown())
            self.alive = False

    def kill(self) -> None:
        self.alive = False
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def crash_detail(self) -> str:
        rc = self.proc.returncode
        tail = " | ".join(line for line in self.stderr_tail if line.strip())[-800:]
        return f"worker pid {self.pid} exited with {rc}" + (f"; stderr: {tail}" if tail else "")

    # -- reading the pipe ------------------------------------------------------------------------------------
    async def _read_frame(self) -> FromWorker:
        stdout = self.proc.stdout
        assert stdout is not None
        header = await stdout.readexactly(HEADER.size)
        return decode_from_worker(await stdout.readexactly(decode_header(header)))

    async def _pump(
        self,
        on_exit: Callable[[WorkerHandle], Awaitable[None]],
        on_change: Callable[[WorkerHandle], Awaitable[None]] | None,
    ) -> None:
        try:
            await self._read_until_closed(on_change)
            self.alive = False
            await self.proc.wait()
        finally:  # also when the pool cancels this task on close: nobody may wait forever on this worker
            self._fail_waiters()
        await on_exit(self)

    async def _read_until_closed(self, on_change: Callable[[WorkerHandle], Awaitable[None]] | None) -> None:
        try:
            while True:
                msg = await self._read_frame()
                if isinstance(msg, BatchVerdict):
                    self.info = msg.info
                    if on_change is not None:
                        await on_change(self)
                elif isinstance(msg, ThreadsAck):
                    fut = self.acks.pop(msg.seq, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg.n)
                elif isinstance(msg, PieceFrame | DoneFrame | ErrorFrame | Cancelled):
                    stream = self.streams.get(msg.rid)
                    if stream is not None:
                        stream.put_nowait(msg)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass

    def _fail_waiters(self) -> None:
        """The worker is gone or no longer read: fail its pending acknowledgements and end its requests' streams."""
        self.alive = False
        for fut in self.acks.values():
            if not fut.done():
                fut.set_exception(Died())
        self.acks.clear()
        for stream in self.streams.values():
            stream.put_nowait(DiedEvent())

    async def _drain_stderr(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        while True:
            line = await stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(text)
            logger.debug("worker %s: %s", self.pid, text)
