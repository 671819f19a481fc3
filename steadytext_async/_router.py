"""Route a request to a provider and a resolved model.

``model="provider:model_id"`` names a remote provider: one passed to the client, one added with
:func:`~steadytext_async.providers.presets.register_provider`, or a built-in preset (see ``providers/presets.py``).
Remote models pass the unsafe_mode gate before any provider is built or any byte is sent. Anything else is local
(registry name, size, Hugging Face repo+file, or a .gguf path). Local resolution (assembly, hashing, download) runs
in a thread and is memoised; failures are remembered for ``FAILURE_TTL`` seconds so an offline hub is not retried
on every call.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Mapping

from ._config import FAILURE_TTL, Settings
from ._env import provider_api_key
from ._exceptions import (
    InvalidRequestError,
    MissingAPIKeyError,
    ModelUnavailableError,
    UnknownProviderError,
    UnsafeModeRequiredError,
)
from ._loopexit import close_at_loop_exit
from ._modelref import ModelRef
from ._models import GenerationRequest, ModelSpec
from ._registry import resolve_model
from .providers.base import Provider
from .providers.daemon import DaemonProvider, local_provider_for
from .providers.local import LocalProvider
from .providers.presets import ProviderPreset, get_preset, known_providers

__all__ = ["Router"]


class Router:
    def __init__(self, settings: Settings, local: LocalProvider, providers: Mapping[str, Provider] | None = None):
        self.settings = settings
        self.local = local
        self.local_target: DaemonProvider | LocalProvider = local_provider_for(settings, local)  # daemon mode hook
        self.providers: dict[str, Provider] = dict(providers or {})  # given ones, then presets built on first use
        # name -> (preset, key digest) a provider in self.providers was built from
        self._built: dict[str, tuple[ProviderPreset, str | None]] = {}
        self._resolved: dict[ModelRef, ModelSpec] = {}
        self._failed: dict[ModelRef, tuple[float, ModelUnavailableError]] = {}
        self._lock = asyncio.Lock()
        self.pid = os.getpid()  # a router (and its connections) made before a fork belongs to the parent
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

    async def route(self, request: GenerationRequest) -> tuple[Provider | LocalProvider, ModelSpec]:
        ref = request.model_ref
        if ref.remote:
            assert ref.provider is not None and ref.name is not None
            return await self.route_remote(request, ref.provider, ref.name)
        return self.local_target, await self.resolve_local(request)

    async def route_remote(self, request: GenerationRequest, name: str, model_id: str) -> tuple[Provider, ModelSpec]:
        """The provider for ``name:model_id``: gate first, then the API key, then the (cached) provider."""
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
        provider = given if given is not None else await self._preset_provider(name)
        preset = getattr(provider, "preset", None)
        spec = ModelSpec(
            provider=name,
            name=model_id,
            base_url=getattr(provider, "base_url", None),
            prompt_format="raw" if isinstance(preset, ProviderPreset) and preset.api == "completions" else "chat",
        )
        return provider, spec

    async def _preset_provider(self, name: str) -> Provider:
        env = self.settings.environ  # as it was when the client's settings were made
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
        identity = (preset, hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest() if api_key else None)
        built = self._built.get(name)
        if built == identity:
            return self.providers[name]
        from .providers.openai_compat import OpenAICompatProvider  # httpx is imported on first remote use only

        old = self.providers.get(name) if built is not None else None
        self.providers[name] = provider = OpenAICompatProvider(preset, api_key=api_key)
        self._built[name] = identity
        close_at_loop_exit(provider)  # its connections belong to this loop
        if old is not None:  # the preset changed (register_provider(replace=True)): drop the old pool
            await old.aclose()
        return self.providers[name]

    def resolved(self, request: GenerationRequest) -> ModelSpec | None:
        """The already-resolved local spec for ``request`` (no I/O, any thread), or None."""
        return self._resolved.get(request.model_ref)

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
