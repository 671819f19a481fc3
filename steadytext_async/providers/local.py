"""Local provider: llama.cpp worker processes (see :mod:`steadytext_async._worker.parent.pool`)."""

from __future__ import annotations

import os
import weakref
from collections.abc import AsyncIterator
from typing import Any, cast, get_args

from .._config import Settings
from .._exceptions import InvalidRequestError, WorkerError
from .._models import FinishReason, GenerationRequest, ModelSpec, TokenLogprob, TopLogprob
from .._worker.parent.pool import Done, Pool
from .._worker.protocol import GenParams
from .base import Capabilities, Provider, ProviderChunk, ProviderDone, ProviderInfo

__all__ = ["LocalProvider"]


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _finish(reason: str) -> FinishReason:
    if reason in get_args(FinishReason):
        return reason  # type: ignore[return-value]
    raise WorkerError(f"worker reported an unknown finish reason {reason!r}")


def _ran(timings: dict[str, float]) -> dict[str, int]:
    """What this request ran with, as opposed to the worker's state now: its thread count, and its batch limit (a
    worker serves unbatched until its self-test decides, then batches)."""
    return {k: int(timings[k]) for k in ("n_threads", "max_batch") if k in timings}


def _token_logprobs(raw: list[Any]) -> list[TokenLogprob]:
    out = []
    for token_id, data, logprob, tops in raw:
        out.append(
            TokenLogprob(
                token=_text(data),
                token_id=token_id,
                bytes=list(data),
                logprob=logprob,
                top_logprobs=[TopLogprob(token=_text(b), token_id=t, bytes=list(b), logprob=v) for t, b, v in tops],
            )
        )
    return out


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
        self._pid = os.getpid()

    @property
    def pool(self) -> Pool:
        from .._engine import engine

        if self._pool is None or self._pid != os.getpid():
            eng = engine()
            self._pool = pool = eng.new_pool(self.settings)
            self._pid = os.getpid()
            weakref.finalize(self, eng.retire_pool, pool)  # an owner dropped without aclose()
        return self._pool

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
                usage = event.usage
                yield ProviderDone(
                    finish_reason=_finish(event.finish_reason),
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"],
                    prompt_tokens_truncated=usage["prompt_tokens_truncated"],
                    prompt_tokens_cached=usage.get("prompt_tokens_cached", 0),
                    queue_wait=event.queue_wait,
                    prompt_eval=event.timings["prompt_eval"],
                    decode=event.timings["decode"],
                    info=cast(ProviderInfo, {**event.info, **_ran(event.timings)}),
                )
            else:
                tokens = _token_logprobs(event.tokens) if event.tokens is not None else None
                yield ProviderChunk(event.text, list(event.token_ids), tokens)

    async def aclose(self) -> None:
        from .._engine import engine

        if self._pool is not None and self._pid == os.getpid():
            pool, self._pool = self._pool, None
            await pool.aclose()
            engine().retire_pool(pool)

    def kill_now(self) -> None:
        if self._pool is not None:
            self._pool.kill_all_now()
