"""AsyncSteadyText: the one implementation of a generation (validate -> route -> provider -> result).

The client lives on the caller's event loop, as ``httpx.AsyncClient`` does: validation, the cache peek (a hot hit,
local or remote, streamed or not, is answered right there), routing and remote HTTP run on the caller's loop, with
the result cache or without. Local generation crosses into the process's engine (:mod:`._engine`) once: a whole
result in one hop, a stream in one hop per batch of ready pieces. A remote result that is not hot reaches the cache
(which lives on the engine's loop) through the engine, its HTTP still on the caller's loop.

Where a request goes is decided once, by the router (:class:`~._router.Route`); every step here reads that value.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar, Unpack

from . import _results
from ._cache import ResultCache
from ._config import Settings
from ._engine import engine
from ._engine.portal import iterate_on
from ._exceptions import ModelUnavailableError
from ._fallback import fallback_words
from ._modelref import ModelRef
from ._models import (
    Chunk,
    Fingerprint,
    GenerationRequest,
    GenerationResult,
    ModelSpec,
    TokenLogprob,
    sha256_text,
)
from ._options import RequestOptions
from ._process import Lifetime, current
from ._replay import ReplayReport, compare, load_recording, request_from_fingerprint
from ._router import Route, Router, input_key, runs_on_callers_loop
from ._textstream import TextAssembler
from ._tools import check_calls, parse_calls
from ._validate import build_request
from ._version import __version__
from ._worker.parent.pool import PoolStats
from .providers.base import ProviderChunk, ProviderDone, ProviderLike
from .providers.local import LocalProvider
from .structured.validate import check_output

__all__ = ["AsyncSteadyText"]

logger = logging.getLogger("steadytext_async")

StreamItem = Chunk | GenerationResult
T = TypeVar("T")


class AsyncSteadyText:
    """Async client. Use as ``async with AsyncSteadyText() as client:`` or call :meth:`aclose`.

    Keyword overrides (``workers=2, threads=2, strict=True, ...``) win over ``STEADYTEXT_*`` variables. A client
    may be used from several event loops (one router and remote connection pool per loop); its worker processes
    and its result cache are the engine's, shared with every client of the process that has the same settings.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        providers: Mapping[str, ProviderLike] | None = None,
        **overrides: Any,
    ) -> None:
        shared_local = overrides.pop("_shared_local", None)
        if settings is not None and overrides:
            raise TypeError("pass either settings or keyword overrides, not both")
        self.settings = settings if settings is not None else Settings.from_env(**overrides)
        self._local: LocalProvider = shared_local if shared_local is not None else LocalProvider(self.settings)
        self._given = dict(providers or {})
        self._resolved: dict[ModelRef, ModelSpec] = {}  # local models resolved by any of this client's routers
        self._routers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Router] = weakref.WeakKeyDictionary()
        self._cache_ref: tuple[Lifetime, ResultCache | None] | None = None  # (process, cache) held from the engine
        self._fallback_warned: set[str] = set()

    # -- per-loop and per-process state ----------------------------------------------------------------------
    @property
    def _router(self) -> Router:
        """This loop's router (remote providers hold connections bound to the loop that made them)."""
        try:
            loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        except RuntimeError:
            loop = engine().portal.loop
        router = self._routers.get(loop)
        if router is None or not router.lifetime.here:
            router = self._routers[loop] = Router(self.settings, self._local, self._given, self._resolved)
            eng = engine()
            if loop is eng.portal.loop:  # a caller's loop closes its own at shutdown (_loopexit); this one lives on
                weakref.finalize(self, eng.close_later, router)
        return router

    @property
    def _cache(self) -> ResultCache | None:
        """The engine's result cache for these settings (taken once per process; None when disabled)."""
        ref = self._cache_ref
        if ref is None or not ref[0].here:
            ref = self._cache_ref = (current(), engine().cache(self.settings))
        return ref[1]

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> AsyncSteadyText:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop this client's worker processes, finish its cache writes and close its remote connections. The
        client can be used again afterwards."""
        router = self._routers.pop(asyncio.get_running_loop(), None)
        if router is not None:
            await router.aclose()
        for provider in self._given.values():
            await provider.aclose()
        await engine().portal.call(self._aclose_engine_side())

    async def _aclose_engine_side(self) -> None:
        ref, self._cache_ref = self._cache_ref, None
        if ref is not None and ref[1] is not None and ref[0].here:
            await engine().release_cache(self.settings)
        if not self._local.shared:
            await self._local.aclose()
        router = self._routers.pop(asyncio.get_running_loop(), None)
        if router is not None:
            await router.aclose()

    def worker_pids(self) -> list[int]:
        """PIDs of live local worker processes (for monitoring and tests)."""
        return self._local.worker_pids()

    # -- public API ------------------------------------------------------------------------------------------
    async def generate(self, prompt: str | None = None, **kwargs: Unpack[RequestOptions]) -> GenerationResult:
        """Generate text; returns a typed, immutable :class:`GenerationResult`.

        Accepts the same keyword arguments as :func:`steadytext_async.agenerate` plus ``strict``; pass
        ``messages=[{"role": ..., "content": ...}, ...]`` instead of ``prompt`` for a conversation.
        """
        return await self.run_request(build_request(prompt, **kwargs))

    async def stream(
        self, prompt: str | None = None, **kwargs: Unpack[RequestOptions]
    ) -> AsyncIterator[Chunk | GenerationResult]:
        """Stream :class:`Chunk` objects, then the final :class:`GenerationResult`."""
        async for item in self.stream_request(build_request(prompt, **kwargs)):
            yield item

    async def preload(
        self,
        *,
        model: str | None = None,
        size: str | None = None,
        model_repo: str | None = None,
        model_filename: str | None = None,
    ) -> ModelSpec:
        """Resolve (assemble/download) a model and start its worker processes now."""
        request = build_request("", model=model, size=size, model_repo=model_repo, model_filename=model_filename)
        return await engine().portal.call(self._preload(request))

    # -- the package's doors ---------------------------------------------------------------------------------
    # Declared for the module-level functions (_api), the blocking client (_sync) and the server (serve), which
    # drive the client only through these and the public API. They take a request already validated
    # (``build_request``); not part of the public API.
    async def run_request(self, request: GenerationRequest) -> GenerationResult:
        """:meth:`generate` of a validated request: a hot hit here, else one engine hop for a local model."""
        hot, route = self._lookup(request)
        if hot is not None:
            return hot[-1]  # type: ignore[return-value]
        if runs_on_callers_loop(request.model_ref):
            return await self._generate(request, route=route)
        return await engine().portal.call(self._generate(request, route=route))

    def stream_request(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        """The items of ``request`` on the caller's loop: a hot replay (no hop), a remote run, or via the engine."""
        hot, route = self._lookup(request)
        if hot is not None:
            return _replay(hot)
        if runs_on_callers_loop(request.model_ref):
            return self._stream(request, route=route)
        return engine().portal.iterate(self._stream(request, route=route))

    def run_request_blocking(self, request: GenerationRequest) -> GenerationResult:
        """The sync shims' generate: a hot hit on the calling thread, else one engine hop (the engine's loop is the
        caller's loop of a blocking call)."""
        hot, route = self._lookup(request)
        if hot is not None:
            return hot[-1]  # type: ignore[return-value]
        return engine().portal.run(self._generate(request, route=route))

    def iterate_request_blocking(self, request: GenerationRequest) -> Iterator[StreamItem]:
        """The sync shims' stream: a hot replay on the calling thread, else the engine's stream."""
        hot, route = self._lookup(request)
        if hot is not None:
            return iter(hot)
        return engine().portal.iterate_sync(self._stream(request, route=route))

    def preload_blocking(self, request: GenerationRequest) -> ModelSpec:
        """The sync shims' :meth:`preload` of a validated request."""
        return engine().portal.run(self._preload(request))

    def replay_blocking(
        self,
        recording: GenerationResult | Fingerprint | str | dict[str, Any],
        *,
        allow_remote: bool = False,
        allow_download: bool = False,
    ) -> ReplayReport:
        """Blocking :meth:`replay`."""
        fingerprint, text = load_recording(recording)
        request = request_from_fingerprint(fingerprint, allow_remote=allow_remote, allow_download=allow_download)
        return engine().portal.run(self._replay(fingerprint, text, request))

    def close_blocking(self) -> None:
        """Blocking :meth:`aclose` of what lives on the engine (the blocking client has no loop of its own)."""
        engine().portal.run(self._aclose_engine_side())

    # the server's: its daemon endpoint streams raw provider events of the local model, and its metrics
    def check_local(self, request: GenerationRequest, spec: ModelSpec | None = None) -> None:
        """Refuse what the local provider cannot run (InvalidRequestError), before any work."""
        self._local.check(request, spec)

    async def resolve_local(self, request: GenerationRequest) -> ModelSpec:
        """``request``'s local model, resolved (assembled, verified) by the engine loop's router."""

        async def resolve() -> ModelSpec:
            return await self._router.resolve_local(request)

        return await engine().portal.call(resolve())

    def stream_local(self, spec: ModelSpec, request: GenerationRequest) -> AsyncIterator[ProviderChunk | ProviderDone]:
        """Raw provider events of one generation on this client's worker pool (never forwarded to a daemon)."""
        return engine().portal.iterate(self._local.stream(spec, request))

    def pool_stats(self) -> PoolStats:
        """Counters of the local worker pool (zeros before the first local request in this process)."""
        return self._local.stats()

    @property
    def result_cache(self) -> ResultCache | None:
        """The engine's result cache this client uses (None when disabled)."""
        return self._cache

    # -- implementation (on the engine's loop for local models, on the caller's for remote ones) ----------------
    async def _preload(self, request: GenerationRequest) -> ModelSpec:
        route = await self._router.route(request)
        await route.provider.preload(route.spec)  # a daemon checks its health (or preloads in-process)
        return route.spec

    async def _generate(
        self, request: GenerationRequest, *, use_cache: bool = True, route: Route | None = None
    ) -> GenerationResult:
        result: GenerationResult | None = None
        async for item in self._stream(request, incremental=False, use_cache=use_cache, route=route):
            if isinstance(item, GenerationResult):
                result = item
        assert result is not None
        return result

    async def replay(
        self,
        recording: GenerationResult | Fingerprint | str | dict[str, Any],
        *,
        allow_remote: bool = False,
        allow_download: bool = False,
    ) -> ReplayReport:
        """Re-run a recorded generation without the cache and report whether the bytes are identical, and which
        fingerprint fields differ between the recording and now. ``recording``: a result, a fingerprint, or
        either as JSON (``steadytext-async generate --json`` output). A remote recording needs
        ``allow_remote=True``, one naming a non-embedded model ``allow_download=True`` (see ``check_consent``)."""
        fingerprint, text = load_recording(recording)
        request = request_from_fingerprint(fingerprint, allow_remote=allow_remote, allow_download=allow_download)
        return await engine().portal.call(self._replay(fingerprint, text, request))

    async def _replay(self, fingerprint: Fingerprint, text: str | None, request: GenerationRequest) -> ReplayReport:
        result = await self._generate(request, use_cache=False)
        recorded_spec = ModelSpec(
            provider=fingerprint.provider,
            name=fingerprint.model,
            sha256=fingerprint.model_sha256,
            prompt_format="chat" if fingerprint.prompt_format == "chat" else "raw",
            base_url=fingerprint.base_url,
        )
        recorded_key = input_key(
            request,
            recorded_spec,
            local=fingerprint.provider == "local",  # what the recording says it ran on
            n_ctx=fingerprint.n_ctx or self.settings.n_ctx,
            n_batch=fingerprint.n_batch or self.settings.n_batch,
        )
        edited = (
            fingerprint.inputs_sha256 is not None
            and fingerprint.package_version == __version__
            and recorded_key != fingerprint.inputs_sha256
        )
        return compare(fingerprint, text, result, inputs_edited=edited)

    def _lookup(self, request: GenerationRequest) -> tuple[tuple[StreamItem, ...] | None, Route | None]:
        """(A hot cache entry's items or None, the request's route if known without I/O), answered on the caller's
        thread with no engine hop. The route is passed down so that a request is routed (and keyed) once."""
        route = self._router.resolved(request)
        cache = self._cache
        if route is None or cache is None or not route.cached or route.stored_key is None:
            return None, route
        items = cache.peek(route.stored_key)
        return (items if items and isinstance(items[-1], GenerationResult) else None), route

    def _strict(self, request: GenerationRequest) -> bool:
        return self.settings.strict if request.strict is None else request.strict

    async def _stream(
        self,
        request: GenerationRequest,
        *,
        incremental: bool = True,
        use_cache: bool = True,
        route: Route | None = None,
    ) -> AsyncIterator[StreamItem]:
        """The whole pipeline. ``incremental=False``: the caller only wants the result (remote: no SSE).
        ``route``: the request's route when the caller already has it (else routed here, once)."""
        t0 = time.perf_counter()
        if route is None:
            try:
                route = await self._router.route(request)
            except ModelUnavailableError as exc:
                if self._strict(request) or request.generation_constraint is not None:  # fallback cannot satisfy it
                    raise
                async for item in self._fallback(request, exc, t0):
                    yield item
                return
        cache = self._cache if use_cache and route.cached else None
        produce = functools.partial(self._produce, route, request, t0, incremental)
        if cache is None or route.stored_key is None:
            async for item in produce():
                yield item
            return
        variant = ("strict" if self._strict(request) else "lenient") + ("" if incremental else "/whole")
        portal = engine().portal
        if portal.in_portal():
            items = cache.stream(route.stored_key, produce, variant=variant)
        else:  # a remote request on the caller's loop: the cache is the engine's, the provider stays here
            here = asyncio.get_running_loop()
            items = portal.iterate(cache.stream(route.stored_key, lambda: iterate_on(here, produce()), variant=variant))
        async with _closing(items):
            async for item in items:
                yield item

    async def _produce(
        self, route: Route, request: GenerationRequest, t0: float, incremental: bool = True
    ) -> AsyncIterator[StreamItem]:
        """Run the provider and build chunks and the final result (falls back if the model cannot load)."""
        provider, spec, key = route.provider, route.spec, route.key
        texts: list[str] = []
        token_ids: list[int] = []
        logprobs: list[TokenLogprob] | None = [] if request.logprobs else None
        done: ProviderDone | None = None
        started = False
        hold = _results.CallHold(request)
        try:
            async with _closing(provider.stream(spec, request, sse=None if incremental else False)) as events:
                async for event in events:
                    started = True
                    if isinstance(event, ProviderDone):
                        done = event
                        break
                    texts.append(event.text)
                    token_ids.extend(event.token_ids)
                    if logprobs is not None and event.tokens is not None:
                        logprobs.extend(event.tokens)
                    if not hold.take(event):
                        yield _results.chunk(event)
        except ModelUnavailableError as exc:
            if started or self._strict(request) or request.generation_constraint is not None:
                raise
            async for item in self._fallback(request, exc, t0):
                yield item
            return
        if done is None:
            raise ModelUnavailableError("provider ended without a final event")
        text = "".join(texts)
        if request.constraint is not None:
            check_output(request.constraint, text)  # the guarantee, local and remote alike; raises ConstraintError
        if request.tools is not None and done.tool_calls is None and route.local:  # in-process or the daemon's
            done = _with_calls(done, request, text, key)
        elif request.tools is not None and done.tool_calls:
            check_calls(request.tools, done.tool_calls, text)
        released = hold.release(done.tool_calls)
        if released is not None:
            yield released
        yield _results.from_done(
            request,
            spec,
            provider.name,
            done,
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            total=time.perf_counter() - t0,
            key=key,
            deterministic=route.deterministic,
        )

    async def _fallback(
        self, request: GenerationRequest, exc: ModelUnavailableError, t0: float
    ) -> AsyncIterator[StreamItem]:
        self._local.check(request)  # the same max_new_tokens limit as the model path
        key = str(exc)
        if key not in self._fallback_warned:
            self._fallback_warned.add(key)
            logger.warning("model unavailable, using deterministic fallback text (not model output): %s", exc)
        asm = TextAssembler(request.stop_string)
        words = fallback_words(request.input_text, request.sampling.seed, request.max_new_tokens)
        for piece in asm.pieces(word.encode("utf-8") for word in words):
            yield Chunk(text=piece.text)
        name = request.model or request.size or self.settings.size
        yield _results.fallback(request, name, asm, total=time.perf_counter() - t0)


def _with_calls(done: ProviderDone, request: GenerationRequest, text: str, key: str | None) -> ProviderDone:
    """A local output's tool calls parsed and checked (the guarantee; raises ConstraintError), with their ids
    derived from the request (its cache key, else a hash of its input and tools) and the output."""
    assert request.tools is not None and request.tool_choice is not None
    if request.tool_choice == "none":
        return done
    seed = key or sha256_text(request.input_text + repr(request.tools_wire()))
    calls = parse_calls(request.tools, request.tool_choice, text, seed)
    if calls is None:
        return done
    return dataclasses.replace(done, finish_reason="tool_calls", tool_calls=list(calls))


async def _replay(items: tuple[StreamItem, ...]) -> AsyncIterator[StreamItem]:
    for item in items:
        yield item


@contextlib.asynccontextmanager
async def _closing(events: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close a provider's stream promptly (an HTTP response, a worker request) however the loop ends."""
    try:
        yield events
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
