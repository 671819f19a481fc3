"""Worker process: loads one GGUF model with llama.cpp and serves generation requests one at a time.

Run as ``python -m steadytext_async._worker.child``. Frames arrive on stdin and leave on the original stdout
(fd 1 is then pointed at stderr so stray prints cannot corrupt the frame stream). A reader thread queues incoming
frames so the decode loop can see ``cancel`` and ``threads`` between decode calls. The process exits when stdin
closes or its parent dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import platform
import queue
import signal
import sys
import threading
import time
from typing import Any

from .._exceptions import ConstraintError
from .governor import ThreadGovernor
from .llama import LlamaModel
from .protocol import read_frame_fd, write_frame_fd

_OUT_FD = -1


def _send(msg: tuple[Any, ...]) -> None:
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


class _Cancelled(Exception):
    pass


class Worker:
    def __init__(self, cfg: dict[str, Any]) -> None:
        import llama_cpp

        self.lc = llama_cpp
        self.cfg = cfg
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.n_threads = int(cfg["n_threads"])  # threads in use now (<= share)
        self.share = self.n_threads  # threads granted by the pool
        self.governor = ThreadGovernor()
        self.model = LlamaModel(
            cfg["model_path"],
            n_ctx=int(cfg["n_ctx"]),
            n_batch=int(cfg["n_batch"]),
            n_threads=self.n_threads,
            log=bool(cfg.get("llama_log")),
        )
        self.llm = self.model.llm
        self._matchers: Any = None  # structured.MatcherFactory, built on the first constrained request (~3 s)

    def info(self) -> dict[str, Any]:
        lc = self.lc
        sysinfo = lc.llama_print_system_info()
        return {
            "pid": os.getpid(),
            "llama_cpp_python_version": getattr(lc, "__version__", "unknown"),
            "llama_cpp_system_info": sysinfo.decode() if isinstance(sysinfo, bytes) else str(sysinfo),
            "n_ctx": int(self.llm.n_ctx()),
            "n_batch": int(self.cfg["n_batch"]),
            "n_ubatch": int(self.cfg["n_batch"]),
            "n_vocab": self.model.n_vocab,
            "cpu": _cpu_summary(),
        }

    # -- control --------------------------------------------------------------------------------------------
    def set_share(self, share: int) -> None:
        """Accept a new grant from the pool; never keep using more threads than granted."""
        self.share = share
        if self.n_threads > share:
            self.use_threads(share)

    def use_threads(self, n: int) -> None:
        if n != self.n_threads:
            self.model.set_threads(n)
            self.n_threads = n

    def poll(self, rid: int) -> None:
        """Handle control frames that arrived while decoding; raise _Cancelled on our cancel."""
        while True:
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._control(msg, rid)

    def _control(self, msg: tuple[Any, ...], rid: int | None) -> None:
        kind = msg[0]
        if kind == "threads":
            self.set_share(int(msg[2]))
            _send(("threads_ok", msg[1], self.share))
        elif kind == "cancel":
            if rid is not None and msg[1] == rid:
                raise _Cancelled
        elif kind == "shutdown":
            os._exit(0)
        else:
            raise RuntimeError(f"unexpected frame {kind!r}")

    # -- generation -----------------------------------------------------------------------------------------
    def _matcher(self, constraint: Any) -> Any:
        """A fresh token matcher for ``constraint`` (a ``structured.Constraint``); compiled grammars are cached."""
        if self._matchers is None:
            from ..structured.local import MatcherFactory

            self._matchers = MatcherFactory(self.llm)
        return self._matchers.matcher(constraint)

    def _tokenize(self, prompt: str, prompt_format: str) -> list[int]:
        if prompt_format == "chat":
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template and self.llm.metadata.get("general.architecture", "").startswith("gemma"):
                template = _GEMMA_TEMPLATE
            if not template:
                raise ValueError("model has no chat template but prompt_format='chat'")
            eos = self.llm.detokenize([self.llm.token_eos()]).decode("utf-8", "replace")
            bos = self.llm.detokenize([self.llm.token_bos()]).decode("utf-8", "replace")
            formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
            text = formatter(messages=[{"role": "user", "content": prompt}]).prompt
            return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        return list(self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False))

    def generate(self, rid: int, p: dict[str, Any]) -> None:
        from .._textstream import TextAssembler
        from .sampling import Sampler, log_softmax_at, top_alternatives

        if "n_threads" in p:
            self.set_share(int(p["n_threads"]))
        constraint = p.get("constraint")
        matcher = self._matcher(constraint) if constraint is not None else None  # fed generated tokens only
        max_new = int(p["max_new_tokens"])
        tokens = self._tokenize(p["prompt"], p.get("prompt_format", "raw"))
        limit = int(self.llm.n_ctx()) - max_new
        if limit < 1:
            raise ValueError(f"max_new_tokens={max_new} leaves no room for the prompt in n_ctx={self.llm.n_ctx()}")
        truncated = 0
        if len(tokens) > limit:
            has_bos = bool(tokens) and tokens[0] == self.llm.token_bos()
            keep = limit - 1 if has_bos else limit
            truncated = len(tokens) - limit
            tokens = ([tokens[0]] if has_bos else []) + tokens[len(tokens) - keep :]
        if not tokens:
            tokens = [self.llm.token_bos()]
        t0 = time.perf_counter()
        self.llm.reset()  # type: ignore[no-untyped-call]
        n_batch = int(self.cfg["n_batch"])
        gov = self.governor
        for start in range(0, len(tokens), n_batch):
            self.poll(rid)
            self.use_threads(gov.best(self.share))
            self.llm.eval(tokens[start : start + n_batch])
        t1 = time.perf_counter()
        sampler = Sampler(
            temperature=float(p["temperature"]),
            seed=int(p["seed"]),
            top_k=int(p["top_k"]),
            top_p=float(p["top_p"]),
            min_p=float(p["min_p"]),
        )
        want_lp = bool(p.get("logprobs"))
        top_n = int(p.get("top_logprobs", 5))
        asm = TextAssembler(None if matcher is not None else p.get("stop"))
        ids: list[int] = []
        info: list[Any] = []
        finish = "length"
        sent = 0

        def flush(piece: Any) -> None:
            nonlocal sent
            if piece is None:
                return
            toks = [ids[i] for i in piece.token_indices]
            lps = [info[i] for i in piece.token_indices] if want_lp else None
            _send(("piece", rid, piece.text, toks, lps))
            sent += len(toks)

        is_end = self.model.is_end
        for i in range(max_new):
            logits = self.model.logits()
            raw = logits.copy() if want_lp and matcher is not None else logits  # logprobs: the model's own
            if matcher is not None:
                # masks in place when needed; closes the output early enough to finish within max_new
                choice = matcher.choose(logits, sampler.pick, is_end, remaining=max_new - i)
                if choice is None:
                    finish = "constraint_forced" if matcher.forced else "constraint_complete"
                    break
                token = choice
                matcher.advance(token)
            else:
                token = sampler.pick(logits)
                if is_end(token):
                    finish = "eos"
                    break
            ids.append(token)
            data = self.model.piece(token)
            if want_lp:
                lp, lse = log_softmax_at(raw, token)
                tops = [(t, self.model.piece(t), v) for t, v in top_alternatives(raw, top_n, lse)]
                info.append((token, data, lp, tops))
            flush(asm.feed(i, data))
            if asm.stopped:
                finish = "stop_string"
                break
            if i + 1 < max_new:
                self.poll(rid)
                n = gov.choose(self.share)
                self.use_threads(n)
                t_step = time.perf_counter()
                self.llm.eval([token])
                gov.record(n, time.perf_counter() - t_step)
        flush(asm.finish())
        if matcher is not None and finish == "length":
            if matcher.accepting and matcher.forced:
                finish = "constraint_forced"
            elif matcher.done:
                finish = "constraint_complete"
            elif not matcher.accepting:
                partial = b"".join(self.model.piece(t) for t in ids).decode("utf-8", "replace")
                shortest = "" if matcher.minimum is None else f"; the shortest valid output is {matcher.minimum} tokens"
                raise ConstraintError(
                    f"max_new_tokens={max_new} ran out before the output satisfied the constraint{shortest}",
                    partial_text=partial,
                )
        t2 = time.perf_counter()
        usage = {"prompt_tokens": len(tokens), "completion_tokens": len(ids), "prompt_tokens_truncated": truncated}
        timings = {"prompt_eval": t1 - t0, "decode": t2 - t1, "n_threads": self.n_threads}
        _send(("done", rid, finish, usage, timings))

    def serve(self) -> None:
        while True:
            msg = self.inbox.get()
            if msg[0] == "gen":
                rid = int(msg[1])
                try:
                    self.generate(rid, msg[2])
                except _Cancelled:
                    _send(("cancelled", rid))
                except ConstraintError as exc:
                    _send(("error", rid, "ConstraintError", str(exc), exc.partial_text))
                except Exception as exc:  # report, keep serving
                    _send(("error", rid, type(exc).__name__, str(exc)))
            else:
                try:
                    self._control(msg, None)
                except _Cancelled:  # pragma: no cover - cancel of a finished request
                    pass


def _reader(inbox: queue.Queue[tuple[Any, ...]]) -> None:
    try:
        while True:
            msg = read_frame_fd(0)
            if msg is None:
                os._exit(0)
            inbox.put(msg)
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
    if init is None or init[0] != "init":
        os._exit(2)
    cfg: dict[str, Any] = init[1]
    try:
        worker = Worker(cfg)
    except BaseException as exc:
        _send(("fatal", f"{type(exc).__name__}: {exc}"))
        os._exit(3)
    threading.Thread(target=_reader, args=(worker.inbox,), name="steadytext-reader", daemon=True).start()
    _send(("ready", worker.info()))
    worker.serve()


if __name__ == "__main__":
    main()
