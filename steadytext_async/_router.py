"""Route a request: one :class:`Route` value (the provider, the resolved model, whether it is deterministic, where it
runs, its cache key and scope), decided here once; every later step (the hop, the cache, the result) reads it.

``model="provider:model_id"`` names a remote provider: one passed to the client, one added with
:func:`~steadytext_async.providers.presets.register_provider`, or a built-in preset (see ``providers/presets.py``).
Remote models pass the unsafe_mode gate before any provider is built or any byte is sent. Anything else is local
(registry name, size, Hugging Face repo+file, or a .gguf path). Local resolution (assembly, hashing, download) runs
in a thread and is memoised (shared by a client's routers); failures are remembered for ``FAILURE_TTL`` seconds so an
offline hub is not retried on every call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Mapping, MutableMapping

from ._cache.key import cache_key, scoped_key
from ._config import FAILURE_TTL, Settings
from ._env import provider_api_key
from ._exceptions import (
    InvalidRequestError,
    MissingAPIKeyError,
    ModelUnavailableError,
    SteadyTextError,
    UnknownProviderError,
    UnsafeModeRequiredError,
)
from ._loopexit import close_at_loop_exit
from ._modelref import ModelRef
from ._models import GenerationRequest, ModelSpec
from ._process import current
from ._registry import resolve_model
from .providers.base import Provider, as_provider
from .providers.daemon import DaemonProvider, local_provider_for
from .providers.local import LocalProvider
from .providers.presets import ProviderPreset, get_preset, known_providers

__all__ = ["Route", "Router", "input_key", "runs_on_callers_loop"]


def runs_on_callers_loop(ref: ModelRef) -> bool:
    """Where a request runs: a remote model on the caller's loop (its connections live there), a local one through
    the engine. Known before routing, from the model reference alone."""
    return ref.remote


def input_key(request: GenerationRequest, spec: ModelSpec, *, local: bool, n_ctx: int, n_batch: int) -> str | None:
    """The cache key (also the fingerprint's inputs_sha256); None when the model has no stable identity (a local
    file whose sha256 is unknown). A local model's key includes the runtime settings that change its bytes."""
    if local and spec.sha256 is None:
        return None
    return cache_key(request, spec, runtime={"n_ctx": n_ctx, "n_batch": n_batch} if local else None)


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes, decided once (:meth:`Router.route`, or :meth:`Router.resolved` without I/O)."""

    provider: Provider
    spec: ModelSpec
    local: bool  # a local model (this process's workers or the daemon's), else a remote provider over HTTP
    deterministic: bool  # the provider's promise; False: best-effort (gated by unsafe_mode, said in the fingerprint)
    key: str | None  # the cache key and the fingerprint's inputs_sha256 (None: no stable model identity)
    cached: bool  # read from and written to the result cache: it has a key and the provider's output is trusted
    stored_key: str | None  # the key the cache stores it under: ``key`` narrowed to the provider's credential scope

    @property
    def here(self) -> bool:
        """True when it runs on the caller's loop (see :func:`runs_on_callers_loop`), else through the engine."""
        return not self.local


def _digest(api_key: str | None) -> str | None:
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest() if api_key else None


class Router:
    def __init__(
        self,
        settings: Settings,
        local: LocalProvider,
        providers: Mapping[str, object] | None = None,
        resolved: MutableMapping[ModelRef, ModelSpec] | None = None,
    ):
        self.settings = settings
        self.local = local
        self.local_target: DaemonProvider | LocalProvider = local_provider_for(settings, local)  # daemon mode hook
        # given ones (with the optional members' defaults), then presets built on first use
        self.providers: dict[str, Provider] = {name: as_provider(p) for name, p in (providers or {}).items()}
        # name -> (preset, key digest) a provider in self.providers was built from
        self._built: dict[str, tuple[ProviderPreset, str | None]] = {}
        # local models resolved so far: shared by a client's routers (a spec is the same on every loop)
        self._resolved: MutableMapping[ModelRef, ModelSpec] = resolved if resolved is not None else {}
        self._failed: dict[ModelRef, tuple[float, ModelUnavailableError]] = {}
        self._lock = asyncio.Lock()
        self.lifetime = current()  # a router (and its connections) made before a fork belongs to the parent
        if self.local_target is not local:
            close_at_loop_exit(self.local_target)  # the daemon provider's connections

    async def aclose(self) -> None:
        """Close the remote providers this router built (given providers belong to the caller)."""
        built = [self.providers.pop(name) for name in list(self._built) if name in self.providers]
        self._built.clear()
        for provider in built:
            await provider.aclose()
        if self.local_target is not self.local:
            await self.local_target.aclose()  # the daemon provider's connections

    # -- the decision --------------------------------------------------------------------------------------------
    async def route(self, request: GenerationRequest) -> Route:
        """The request's route: a remote provider (gate first, then the API key, then the provider, built once per
        loop) or the local one with the model resolved (assembled, hashed or downloaded once, in a thread)."""
        ref = request.model_ref
        if runs_on_callers_loop(ref):
            assert ref.provider is not None and ref.name is not None
            self._gate(request, ref.provider, ref.name)
            provider = self._existing(ref.provider) or await self._preset_provider(ref.provider)
            return self._decide(request, provider, provider.spec_for(ref.provider, ref.name), local=False)
        return self._decide(request, self.local_target, await self.resolve_local(request), local=True)

    def resolved(self, request: GenerationRequest) -> Route | None:
        """The request's route when it is known without I/O (a local model already resolved; a remote provider
        already built on this loop, the gate passed), else None. For the cache peek, on the caller's thread."""
        ref = request.model_ref
        if runs_on_callers_loop(ref):
            assert ref.provider is not None and ref.name is not None
            try:
                self._gate(request, ref.provider, ref.name)
                provider = self._existing(ref.provider)
            except SteadyTextError:
                return None  # route() raises it
            if provider is None:
                return None
            return self._decide(request, provider, provider.spec_for(ref.provider, ref.name), local=False)
        spec = self._resolved.get(ref)
        return self._decide(request, self.local_target, spec, local=True) if spec is not None else None

    def _decide(self, request: GenerationRequest, provider: Provider, spec: ModelSpec, *, local: bool) -> Route:
        s = self.settings
        key = input_key(request, spec, local=local, n_ctx=s.n_ctx, n_batch=s.n_batch)
        return Route(
            provider=provider,
            spec=spec,
            local=local,
            deterministic=provider.capabilities.deterministic,
            key=key,
            cached=key is not None and not s.cache_disabled and provider.results_cacheable,
            stored_key=scoped_key(key, provider.cache_scope) if key is not None else None,
        )

    # -- remote --------------------------------------------------------------------------------------------------
    def _gate(self, request: GenerationRequest, name: str, model_id: str) -> None:
        """An unknown provider, an empty model id, or a best-effort provider without unsafe_mode is refused here,
        before any provider is built or any byte is sent."""
        model = f"{name}:{model_id}"
        given = self.providers.get(name) if name not in self._built else None
        if given is None and name not in known_providers():
            known = ", ".join(sorted({*known_providers(), *self.providers}))
            raise UnknownProviderError(f"unknown provider {name!r} in model {model!r}; known providers: {known}")
        if not model_id:
            raise InvalidRequestError(f"model {model!r} has an empty model id (use 'provider:model_id')")
        deterministic = given.capabilities.deterministic if given is not None else False
        if not deterministic and not (request.unsafe_mode or self.settings.unsafe_mode):
            raise UnsafeModeRequiredError(
                f"model {model!r} is remote and only best-effort deterministic; pass unsafe_mode=True to use it"
            )

    def _preset_and_key(self, name: str) -> tuple[ProviderPreset, str | None]:
        """The preset for ``name`` and its API key, from the client's environment snapshot (no I/O)."""
        env = self.settings.environ
        preset = get_preset(name, env)
        api_key = None
        if preset.api_key_env is not None:
            api_key = provider_api_key(preset.api_key_env, env)
            if api_key is None:
                raise MissingAPIKeyError(
                    f"provider {name!r} needs an API key: set the {preset.api_key_env} environment variable",
                    provider=name,
                    env_var=preset.api_key_env,
                )
        return preset, api_key

    def _existing(self, name: str) -> Provider | None:
        """The provider for ``name`` when it needs no building: a given one, or a preset's provider built from the
        same preset and key."""
        if name not in self._built:
            return self.providers.get(name)
        preset, api_key = self._preset_and_key(name)
        return self.providers[name] if self._built[name] == (preset, _digest(api_key)) else None

    async def _preset_provider(self, name: str) -> Provider:
        """Build the provider for preset ``name`` (replacing one built from an older preset)."""
        preset, api_key = self._preset_and_key(name)
        from .providers.openai_compat import OpenAICompatProvider  # httpx is imported on first remote use only

        old = self.providers.get(name) if name in self._built else None
        self.providers[name] = provider = OpenAICompatProvider(preset, api_key=api_key)
        self._built[name] = (preset, _digest(api_key))
        close_at_loop_exit(provider)  # its connections belong to this loop
        if old is not None:  # the preset changed (register_provider(replace=True)): drop the old pool
            await old.aclose()
        return provider

    # -- local ---------------------------------------------------------------------------------------------------
    async def resolve_local(self, request: GenerationRequest) -> ModelSpec:
        s = self.settings
        key = request.model_ref
        spec = self._resolved.get(key)
        if spec is not None:
            return spec
        async with self._lock:
            spec = self._resolved.get(key)
            if spec is not None:
                return spec
            failed = self._failed.get(key)
            if failed is not None and time.monotonic() - failed[0] < FAILURE_TTL:
                raise failed[1]
            try:
                spec = await asyncio.to_thread(
                    resolve_model, key, default_size=s.size, default_path=s.model_path, model_dir=s.model_dir
                )
            except ModelUnavailableError as exc:
                self._failed[key] = (time.monotonic(), exc)
                raise
            self._resolved[key] = spec
            return spec
