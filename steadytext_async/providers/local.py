"""Local provider: llama.cpp worker processes (see :mod:`steadytext_async._worker.parent.pool`)."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import get_args

from .._config import Settings
from .._exceptions import InvalidRequestError, WorkerError
from .._models import FinishReason, GenerationRequest, ModelSpec, TokenLogprob, TopLogprob
from .._process import current
from .._worker.parent.pool import Done, Pool, PoolStats
from .._worker.protocol import DoneTimings, GenParams, TokenInfo, WorkerInfo
from .base import Capabilities, Provider, ProviderChunk, ProviderDone, ProviderInfo

__all__ = ["LocalProvider"]


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _finish(reason: str) -> FinishReason:
    if reason in get_args(FinishReason):
        return reason  # type: ignore[return-value]
    raise WorkerError(f"worker reported an unknown finish reason {reason!r}")


def _provider_info(worker: WorkerInfo, ran: DoneTimings) -> ProviderInfo:
    """The worker's llama.cpp setup, with what this request ran with as opposed to the worker's state now: its
    thread count, its batch limit and the kernel settings of its context (a worker serves unbatched in a context of
    one sequence until its self-test decides and its wide context is built, then batches; the bytes are the same)."""
    info = ProviderInfo(
        llama_cpp_python_version=worker.llama_cpp_python_version,
        llama_cpp_system_info=worker.llama_cpp_system_info,
        n_ctx=worker.n_ctx,
        n_batch=worker.n_batch,
        n_ubatch=worker.n_ubatch,
        n_threads=ran.n_threads,
        max_batch=ran.max_batch,
        kernel=ran.kernel or worker.kernel,
        cpu=worker.cpu,
    )
    if worker.chat_template_sha256 is not None:
        info["chat_template_sha256"] = worker.chat_template_sha256
    return info


def _token_logprobs(raw: list[TokenInfo]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            token=_text(t.data),
            token_id=t.token_id,
            bytes=list(t.data),
            logprob=t.logprob,
            top_logprobs=[TopLogprob(token=_text(b), token_id=i, bytes=list(b), logprob=v) for i, b, v in t.top],
        )
        for t in raw
    ]


class LocalProvider(Provider):
    """Runs GGUF models in a pool of worker processes. Used on the engine loop (see :mod:`.._engine`).

    Each client owns one (its worker processes stop with ``aclose()``), except the module-level functions, which
    share the engine's. Every pool draws decode threads from the engine's host-wide budget. A pool made before a
    ``fork`` is the parent's: a child makes its own on first use.
    """

    name = "local"
    capabilities = Capabilities(deterministic=True)

    def __init__(self, settings: Settings, *, shared: bool = False) -> None:
        self.settings = settings
        self.shared = shared
        self._pool: Pool | None = None
        self._lifetime = current()  # the process self._pool belongs to

    @property
    def pool(self) -> Pool:
        from .._engine import engine

        if self._pool is None or not self._lifetime.here:
            eng = engine()
            self._pool = pool = eng.new_pool(self.settings)
            self._lifetime = current()
            weakref.finalize(self, eng.retire_pool, pool)  # an owner dropped without aclose()
        return self._pool

    def _started(self) -> Pool | None:
        """This process's pool if one was started (without starting one)."""
        return self._pool if self._lifetime.here else None

    def worker_pids(self) -> list[int]:
        pool = self._started()
        return pool.pids() if pool is not None else []

    def stats(self) -> PoolStats:
        pool = self._started()
        return pool.stats() if pool is not None else PoolStats()

    def check(self, request: GenerationRequest, spec: ModelSpec | None = None) -> None:
        if spec is not None and spec.prompt_format != "chat" and request.messages is not None:
            raise InvalidRequestError(
                f"model {spec.name} takes raw prompts (a base model, no chat template): pass prompt=, or choose a "
                "chat model for messages="
            )
        if spec is not None and spec.prompt_format != "chat" and request.tools is not None:
            raise InvalidRequestError(f"model {spec.name} has no chat template: tools need a chat model")
        if request.max_new_tokens >= self.settings.n_ctx:
            raise InvalidRequestError(
                f"max_new_tokens={request.max_new_tokens} must be smaller than the context window "
                f"n_ctx={self.settings.n_ctx} (set STEADYTEXT_N_CTX to raise it)"
            )

    async def preload(self, spec: ModelSpec) -> None:
        assert spec.path is not None
        await self.pool.preload(spec.path)

    async def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        assert spec.path is not None
        self.check(request, spec)
        s = request.sampling
        params = GenParams(
            prompt=request.prompt or "",
            messages=request.chat() if spec.prompt_format == "chat" else None,
            max_new_tokens=request.max_new_tokens,
            stop=request.stop_string,
            temperature=s.temperature,
            seed=s.seed,
            top_k=s.top_k,
            top_p=s.top_p,
            min_p=s.min_p,
            logprobs=request.logprobs,
            top_logprobs=request.top_logprobs,
            constraint=request.generation_constraint,
            tools=tuple(request.tools_wire() or ()) or None,
            tool_choice=request.tool_choice_wire(),
        )
        async for event in self.pool.stream(spec.path, params):
            if isinstance(event, Done):
                usage, timings = event.usage, event.timings
                yield ProviderDone(
                    finish_reason=_finish(event.finish_reason),
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    prompt_tokens_truncated=usage.prompt_tokens_truncated,
                    prompt_tokens_cached=usage.prompt_tokens_cached,
                    queue_wait=event.queue_wait,
                    prompt_eval=timings.prompt_eval,
                    decode=timings.decode,
                    info=_provider_info(event.info, timings),
                )
            else:
                tokens = _token_logprobs(event.tokens) if event.tokens is not None else None
                yield ProviderChunk(event.text, list(event.token_ids), tokens)

    async def aclose(self) -> None:
        from .._engine import engine

        if self._pool is not None and self._lifetime.here:
            pool, self._pool = self._pool, None
            await pool.aclose()
            engine().retire_pool(pool)

    def kill_now(self) -> None:
        if self._pool is not None:
            self._pool.kill_all_now()
