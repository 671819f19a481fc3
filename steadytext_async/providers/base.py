"""The provider interface: everything the client needs from a backend, and nothing more.

A provider turns a resolved :class:`ModelSpec` plus a validated :class:`GenerationRequest` into a stream of
:class:`ProviderChunk` ending in exactly one :class:`ProviderDone`. It raises
:class:`~steadytext_async.ModelUnavailableError` when the model cannot be loaded (the client decides whether to
fall back) and other :class:`~steadytext_async.SteadyTextError` subclasses for everything else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypedDict, runtime_checkable

from .._models import FinishReason, GenerationRequest, ModelSpec, TokenLogprob
from .._tools import ToolCall

__all__ = ["Capabilities", "Provider", "ProviderChunk", "ProviderDone", "ProviderInfo", "ProviderLike", "as_provider"]


class ProviderInfo(TypedDict, total=False):
    """What a provider reports about the run, recorded in the result's fingerprint (every key optional)."""

    # local (llama.cpp worker)
    llama_cpp_python_version: str
    llama_cpp_system_info: str
    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_threads: int
    max_batch: int  # requests the worker may decode together (its batching self-test; 1 = no batching)
    kernel: str  # llama.cpp settings that decide the bytes (repack, flash attention, tiled matmul, ...)
    cpu: str
    chat_template_sha256: str  # sha256 of the chat template the worker renders messages with
    # remote (OpenAI-compatible endpoint)
    remote_system_fingerprint: str
    remote_model: str
    remote_id: str
    attempts: int
    request_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Capabilities:
    deterministic: bool = True  # False: remote/best-effort, only allowed with unsafe_mode=True


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderChunk:
    text: str
    token_ids: list[int]
    tokens: list[TokenLogprob] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderDone:
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_truncated: int = 0
    prompt_tokens_cached: int = 0
    queue_wait: float = 0.0
    prompt_eval: float = 0.0
    decode: float = 0.0
    info: ProviderInfo = dataclasses.field(default_factory=lambda: ProviderInfo())
    tool_calls: list[ToolCall] | None = None  # remote providers: the calls the response made


class ProviderLike(Protocol):
    """What a provider given to a client must have: :class:`Provider`'s required members (the optional ones get
    their defaults from :func:`as_provider`). ``AsyncSteadyText(providers=...)`` takes this."""

    name: str
    capabilities: Capabilities

    def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    """The interface. ``name``, ``capabilities``, :meth:`stream` and :meth:`aclose` are required; the optional
    members have defaults here, which a provider gets by subclassing ``Provider`` (a duck-typed object passed to a
    client without them is given the defaults by :func:`as_provider`, once, when the client is made)."""

    name: str
    capabilities: Capabilities
    cache_scope: str | None = None  # remote entries are stored per credential scope (see _cache.key.scoped_key)
    results_cacheable: bool = True  # False: output is not authenticated (never written to the result cache)

    def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        """Generate; yield chunks, then one ProviderDone.

        ``sse=False`` says the caller wants only the final text (a remote provider may then skip streaming);
        ``None`` leaves the choice to the provider.
        """
        ...

    async def aclose(self) -> None:
        """Release processes, connections and files."""
        ...

    async def preload(self, spec: ModelSpec) -> None:
        """Load ``spec`` now (a local model's workers); nothing to do by default."""
        return None

    def check(self, request: GenerationRequest, spec: ModelSpec | None = None) -> None:
        """Refuse what this provider cannot run, before any work (raise InvalidRequestError); accepts by default."""
        return None

    def spec_for(self, name: str, model_id: str) -> ModelSpec:
        """The model ``name:model_id`` routed to this provider (a remote one adds its base URL and prompt format)."""
        return ModelSpec(provider=name, name=model_id, prompt_format="chat")


class _Adapted(Provider):
    """A duck-typed provider (name, capabilities, stream, aclose) with the optional members' defaults."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        for optional in ("cache_scope", "results_cacheable", "preload", "check", "spec_for"):  # the ones it has, kept
            if hasattr(inner, optional):
                setattr(self, optional, getattr(inner, optional))

    def stream(
        self, spec: ModelSpec, request: GenerationRequest, *, sse: bool | None = None
    ) -> AsyncIterator[ProviderChunk | ProviderDone]:
        stream: AsyncIterator[ProviderChunk | ProviderDone] = self.inner.stream(spec, request, sse=sse)
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


def as_provider(provider: object) -> Provider:
    """``provider`` itself when it has the whole interface, else wrapped with the optional members' defaults."""
    return provider if isinstance(provider, Provider) else _Adapted(provider)
