"""Worker process: loads one GGUF model with llama.cpp and decodes up to ``max_batch`` requests together.

Run as ``python -m steadytext_async._worker.child`` (its ``__main__`` calls :func:`main`). Frames arrive on stdin and
leave on the original stdout (fd 1 is then pointed at stderr so stray prints cannot corrupt the frame stream). A reader
thread queues incoming frames so the decode loop sees new requests, ``Cancel`` and ``SetThreads`` between decode calls.
A worker is ready once its weights and a context of one sequence are loaded, and serves unbatched in it while a thread
builds its wide context (:mod:`.widen`); a worker whose batching self-test (:mod:`.selftest`) has no cached verdict
also runs the test between its own steps. Once both are there it serves up to that many requests at once
(:mod:`.batch`); every change is reported to the pool with ``BatchVerdict``. The process exits when stdin closes or
its parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..._errorwire import to_record
from ..protocol import (
    BatchVerdict,
    Cancel,
    Cancelled,
    ErrorFrame,
    Fatal,
    FromWorker,
    Generate,
    GenParams,
    Init,
    Ready,
    SetThreads,
    Shutdown,
    ThreadsAck,
    ToWorker,
    WorkerConfig,
    WorkerInfo,
    read_frame_fd,
    write_frame_fd,
)
from . import selftest
from .batch import Batcher
from .decode import SequenceDecoder
from .llama import LlamaModel
from .prefix import PrefixStore
from .sampling import Sampler
from .widen import HELD_BACK, POLL, ContextBuild

_OUT_FD = -1


def _send(msg: FromWorker) -> None:
    write_frame_fd(_OUT_FD, msg)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - non-glibc
        pass


def _cpu_summary() -> str:
    model = platform.machine()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == platform.machine():
                    model = f"{platform.machine()} {line.split(':', 1)[1].strip()}"
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "neon") if f in flags]
    return f"{model} [{' '.join(simd)}]"


# Gemma's turn format, used when a gemma GGUF carries no template of its own.
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}<start_of_turn>model\n"
)


class Worker:
    def __init__(self, cfg: WorkerConfig, send: Callable[[FromWorker], None] = _send) -> None:
        import llama_cpp

        self.lc = llama_cpp
        self.cfg = cfg
        self.send = send
        self.inbox: queue.Queue[ToWorker] = queue.Queue()
        # Ready comes after one sequence's context (0.13 s for the default model, against 0.47 s for 8 x 4096 cells);
        # a lone sequence decodes to the same bytes in it as in the wide context built beside it (see widen.py)
        self.model = LlamaModel(
            cfg.model_path,
            n_ctx=cfg.n_ctx,
            n_batch=cfg.n_batch,
            n_threads=cfg.n_threads,
            n_seq=1,
            log=cfg.llama_log,
        )
        self.batch_max = 1  # requests decoded together now
        self.selftest_seconds = 0.0
        self._verdict = self._batch_verdict()  # None: the self-test is pending
        self.prefix = PrefixStore(self.model, cap=cfg.prefix_cache_bytes) if cfg.prefix_cache_bytes > 0 else None
        self.batcher = Batcher(self.model, slots=1, per_call=1, threads=cfg.n_threads, send=send, prefix=self.prefix)
        self.waiting: deque[Generate] = deque()
        self._matchers: Any = None  # structured.MatcherFactory, built on the first constrained request (~3 s)
        self._wide: ContextBuild | None = None
        if not self.model.movable:  # a recurrent state cannot move to another context: widen before Ready
            self._build_wide(cfg.max_batch if self._verdict is None else self._verdict)
            if self._wide is not None:
                self._wide.wait()
                self._adopt_wide(report=False)
        elif self._verdict is not None:
            self._build_wide(self._verdict)
        # else: built once the self-test's verdict says batching keeps the bytes (a build beside the self-test's
        # steps slowed a fresh machine's first request from 1.77 to 2.54 s, and the verdict may be 1)

    def _build_wide(self, width: int) -> None:
        """Start building the context of ``width`` sequences beside the one in use (none below 2)."""
        if width < 2:
            return
        small, n_ctx = self.model, self.cfg.n_ctx
        self._wide = ContextBuild(lambda: small.sibling(n_ctx=n_ctx, n_seq=width))
        if small.movable:
            self.batcher.hold_back(HELD_BACK)

    def _system_info(self) -> dict[str, str]:
        lc = self.lc
        sysinfo = lc.llama_print_system_info()
        return {
            "llama_cpp_python_version": getattr(lc, "__version__", "unknown"),
            "llama_cpp_system_info": sysinfo.decode() if isinstance(sysinfo, bytes) else str(sysinfo),
            "cpu": _cpu_summary(),
        }

    def _batch_verdict(self) -> int | None:
        """The batch size this setup allows: a cached verdict for this exact setup, else None with the self-test
        pending; it then runs between the worker's own steps (:meth:`work`) and never delays Ready."""
        cfg = self.cfg
        self._selftest: selftest.PendingVerdict | None = None
        limit = cfg.max_batch
        if limit < 2:
            return 1
        key = selftest.verdict_key(cfg.model_path, self._system_info(), cfg.n_threads, cfg.max_batch, cfg.n_batch)
        path = Path(cfg.verdict_path) if cfg.verdict_path else None
        cached = selftest.load_verdict(path, key, limit) if path is not None else None
        if cached is not None:
            return cached
        self._selftest = selftest.PendingVerdict(
            lambda k: self.model.sibling(n_ctx=selftest.PROBE_CTX, n_seq=k), limit, path=path, key=key
        )
        return None

    def _advance_selftest(self) -> None:
        """One step of the pending self-test, on the threads the batcher uses now; widen the batch once decided."""
        pending = self._selftest
        if pending is None:
            return
        verdict = pending.step(self.batcher.n_threads)
        if verdict is not None:
            self._take_verdict(pending, verdict)

    def _poll_selftest(self) -> None:
        """An idle worker hands back the self-test lock (it would hold up every other worker's test while it
        waits for requests) and takes a verdict another worker stored (batch-first traffic may never reach it)."""
        pending = self._selftest
        if pending is None:
            return
        pending.pause()
        verdict = pending.poll()
        if verdict is not None:
            self._take_verdict(pending, verdict)

    def _take_verdict(self, pending: selftest.PendingVerdict, verdict: int) -> None:
        self._selftest = None
        self._verdict, self.selftest_seconds = verdict, pending.seconds
        if self._wide is None and self.model.n_seq == 1:
            self._build_wide(verdict)
        self._widen()

    def _adopt_wide(self, *, report: bool = True) -> None:
        """Once its build is done, move every request to the wide context, free the one-sequence context and
        widen; called between steps only."""
        build = self._wide
        if build is None or not build.done:
            return
        self._wide = None
        self.batcher.hold_back(0)
        try:
            wide = build.result()
        except Exception as exc:  # no memory for it: keep serving unbatched (one sequence per step)
            print(
                f"steadytext: could not build the batching context ({type(exc).__name__}: {exc}); not batching",
                file=sys.stderr,
            )
            self._widen(report=report)
            return
        if self._verdict == 1:  # the self-test found no batch size that keeps the bytes: the context is not needed
            wide.close()
        else:
            self._move_to(wide)
        self._widen(report=report)

    def _move_to(self, wide: LlamaModel) -> None:
        old = self.model
        try:
            self.batcher.move_to(wide)
        except RuntimeError as exc:  # a request's KV cells did not load: stay in the small context, unbatched
            print(f"steadytext: could not move to the batching context ({exc}); not batching", file=sys.stderr)
            wide.close()
            return
        if self.prefix is not None:  # the worker's store, attached to the batcher or not
            self.prefix.model = wide
        old.pass_weights(wide)
        old.close()
        self.model = wide

    def _widen(self, *, report: bool = True) -> None:
        """Serve up to the verdict's number of requests at once if the wide context is in use, and tell the pool
        the worker's report changed (unless it has not sent Ready yet)."""
        if self._verdict is not None and self._wide is None:
            width = min(self._verdict, self.model.n_seq)
            if width > self.batch_max:
                self.batch_max = width
                self.batcher.widen(width)
        if report:
            self.send(BatchVerdict(self.info()))

    def finish_selftest(self) -> None:
        """Run the pending self-test to its end and wait for the wide context now (tests and benchmarks that want
        the batched worker at once)."""
        while self._selftest is not None:
            self._advance_selftest()
            if self._selftest is not None and self._selftest.state == "waiting":
                time.sleep(selftest.RECHECK)
        if self._wide is not None:
            self._wide.wait()
            self._adopt_wide()

    def close(self) -> None:
        """Free the contexts and the weights (in-process users: tests and benchmarks; a worker process just exits)."""
        if self._selftest is not None:
            self._selftest.close()
            self._selftest = None
        if self._wide is not None:
            self._wide.close()
            self._wide = None
        self.model.close()

    def info(self) -> WorkerInfo:
        template = self.chat_template
        system = self._system_info()
        return WorkerInfo(
            pid=os.getpid(),
            llama_cpp_python_version=system["llama_cpp_python_version"],
            llama_cpp_system_info=system["llama_cpp_system_info"],
            cpu=system["cpu"],
            n_ctx=self.model.n_ctx,
            n_batch=self.cfg.n_batch,
            n_ubatch=self.cfg.n_batch,
            n_vocab=self.model.n_vocab,
            max_batch=self.batch_max,
            kernel=self.model.kernel,
            selftest_seconds=round(self.selftest_seconds, 3),
            selftest_pending=self._selftest is not None,
            chat_template_sha256=None if template is None else hashlib.sha256(template.encode()).hexdigest(),
            widening=self._wide is not None,
        )

    # -- requests -----------------------------------------------------------------------------------------------
    def _matcher(self, constraint: Any) -> Any:
        """A fresh token matcher for ``constraint`` (a ``structured.Constraint``); compiled grammars are cached."""
        if self._matchers is None:
            from ...structured.local import MatcherFactory

            self._matchers = MatcherFactory(self.model.model)
        return self._matchers.matcher(constraint)

    @functools.cached_property
    def chat_template(self) -> str | None:
        """The chat template messages are rendered with: the GGUF's own (gemma's turn format for a gemma GGUF
        without one), or None when the model has none."""
        m = self.model
        template = m.metadata.get("tokenizer.chat_template")
        if not template and m.metadata.get("general.architecture", "").startswith("gemma"):
            template = _GEMMA_TEMPLATE
        return template or None

    @functools.cached_property
    def _formatter(self) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if self.chat_template is None:
            raise ValueError("the model has no chat template: pass a prompt, not messages")
        m = self.model
        eos = m.piece(m.token_eos()).decode("utf-8", "replace")
        bos = m.piece(m.token_bos()).decode("utf-8", "replace")
        return Jinja2ChatFormatter(template=self.chat_template, eos_token=eos, bos_token=bos)

    def _render(self, p: GenParams) -> str:
        """The conversation through the chat template (with tools: see :func:`.._tools.render`)."""
        from ..._tools import render

        assert p.messages is not None and self.chat_template is not None
        return render(self._formatter, self.chat_template, p.messages, p.tools, p.tool_choice)

    def _tokenize(self, p: GenParams) -> list[int]:
        m = self.model
        if p.messages is not None:
            text = self._render(p)
            return m.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return m.tokenize(p.prompt.encode("utf-8"), add_bos=True, special=False)

    def _prompt(self, p: GenParams) -> tuple[list[int], int]:
        """The prompt's tokens, cut to fit the sequence's context, and how many were dropped."""
        max_new = p.max_new_tokens
        tokens = self._tokenize(p)
        n_ctx = self.model.n_ctx
        limit = n_ctx - max_new
        if limit < 1:
            raise ValueError(f"max_new_tokens={max_new} leaves no room for the prompt in n_ctx={n_ctx}")
        truncated = 0
        bos = self.model.token_bos()
        if len(tokens) > limit:
            has_bos = bool(tokens) and tokens[0] == bos
            keep = limit - 1 if has_bos else limit
            truncated = len(tokens) - limit
            tokens = ([tokens[0]] if has_bos else []) + tokens[len(tokens) - keep :]
        return tokens or [bos], truncated

    def start(self, msg: Generate) -> None:
        p = msg.params
        try:
            matcher = self._matcher(p.constraint) if p.constraint is not None else None
            tokens, truncated = self._prompt(p)
        except Exception as exc:  # report, keep serving
            self.send(ErrorFrame(msg.rid, to_record(exc)))
            return
        sampler = Sampler(temperature=p.temperature, seed=p.seed, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p)
        decoder = SequenceDecoder(
            self.model,
            max_new_tokens=p.max_new_tokens,
            sampler=sampler,
            matcher=matcher,
            stop=p.stop,
            logprobs=p.logprobs,
            top_logprobs=p.top_logprobs,
        )
        self.batcher.admit(msg.rid, tokens, truncated, decoder)

    # -- the loop -----------------------------------------------------------------------------------------------
    def handle(self, msg: ToWorker) -> None:
        if isinstance(msg, Generate):
            if msg.n_threads is not None:
                self.batcher.set_share(msg.n_threads)
            self.waiting.append(msg)
        elif isinstance(msg, Cancel):
            queued = [m for m in self.waiting if m.rid == msg.rid]
            for m in queued:
                self.waiting.remove(m)
            if queued or self.batcher.cancel(msg.rid):
                self.send(Cancelled(msg.rid))
        elif isinstance(msg, SetThreads):
            self.batcher.set_share(msg.n)
            self.send(ThreadsAck(msg.seq, self.batcher.share))
        elif isinstance(msg, Shutdown):
            os._exit(0)
        else:
            raise RuntimeError(f"unexpected frame {type(msg).__name__}")

    def serve(self) -> None:
        while True:
            idle = not self.batcher.busy and not self.waiting
            # idle with the self-test pending: wake every RECHECK seconds to look for another worker's verdict;
            # with the wide context being built: every POLL seconds, to take it in use as soon as it is there
            timeout = selftest.RECHECK if idle and self._selftest is not None else None
            if idle and self._wide is not None:
                timeout = POLL
            block = idle
            while True:
                try:
                    msg = self.inbox.get(block=block, timeout=timeout if block else None)
                except queue.Empty:
                    break
                self.handle(msg)
                block = False
            if idle and self._selftest is not None:
                self._poll_selftest()
            self.work()

    def work(self) -> None:
        """Take the wide context in use if it is built, admit waiting requests into free slots, then one batcher
        tick and, while requests hold the worker's thread share, one step of a pending self-test (an idle worker's
        threads are not its to use; a frame waiting in the inbox, e.g. a cancel, goes first)."""
        self._adopt_wide()
        while self.waiting and self.batcher.capacity:
            self.start(self.waiting.popleft())
        self.batcher.tick()
        if self._selftest is not None and self.batcher.busy and self.inbox.empty():
            self._advance_selftest()


def _reader(inbox: queue.Queue[ToWorker]) -> None:
    try:
        while True:
            msg = read_frame_fd(0)
            if msg is None:
                os._exit(0)
            inbox.put(msg)  # type: ignore[arg-type]
    except Exception:  # broken pipe or garbage: nothing sensible left to do
        os._exit(1)


def main() -> None:
    global _OUT_FD
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns our lifetime (Ctrl-C goes to the group)
    _die_with_parent()
    _OUT_FD = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    init = read_frame_fd(0)
    if not isinstance(init, Init):
        os._exit(2)
    try:
        worker = Worker(init.cfg)
    except BaseException as exc:
        _send(Fatal(to_record(exc)))
        os._exit(3)
    threading.Thread(target=_reader, args=(worker.inbox,), name="steadytext-reader", daemon=True).start()
    _send(Ready(worker.info()))
    worker.serve()
