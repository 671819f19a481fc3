"""Route a request to a provider and a resolved model.

``model="provider:model_id"`` names a registered provider; anything else is local (registry name, size,
Hugging Face repo+file, or a .gguf path). Local resolution (assembly, hashing, download) runs in a thread and is
memoised; failures are remembered for ``FAILURE_TTL`` seconds so an offline hub is not retried on every call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from ._config import Settings
from ._exceptions import InvalidRequestError, ModelUnavailableError, UnsafeModeRequiredError
from ._models import GenerationRequest, ModelSpec
from ._registry import is_local_path, resolve_model
from .providers.base import Provider
from .providers.local import LocalProvider

__all__ = ["Router"]

FAILURE_TTL = 30.0


class Router:
    def __init__(self, settings: Settings, local: LocalProvider, providers: Mapping[str, Provider] | None = None):
        self.settings = settings
        self.local = local
        self.providers: dict[str, Provider] = dict(providers or {})
        self._resolved: dict[tuple[Any, ...], ModelSpec] = {}
        self._failed: dict[tuple[Any, ...], tuple[float, ModelUnavailableError]] = {}
        self._lock = asyncio.Lock()

    async def route(self, request: GenerationRequest) -> tuple[Provider | LocalProvider, ModelSpec]:
        model = request.model
        if model is not None and ":" in model and not is_local_path(model):
            prefix, _, model_id = model.partition(":")
            provider = self.providers.get(prefix)
            if provider is None:
                known = ", ".join(sorted(self.providers)) or "none registered"
                raise NotImplementedError(
                    f"remote provider {prefix!r} is not available in this version (known providers: {known})"
                )
            if not provider.capabilities.deterministic and not request.unsafe_mode:
                raise UnsafeModeRequiredError(f"model {model!r} requires unsafe_mode=True")
            if not model_id:
                raise InvalidRequestError(f"model {model!r} has an empty model id")
            return provider, ModelSpec(provider=prefix, name=model_id)
        return self.local, await self.resolve_local(request)

    async def resolve_local(self, request: GenerationRequest) -> ModelSpec:
        s = self.settings
        key = (request.model, request.model_repo, request.model_filename, request.size)
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
                    resolve_model,
                    model=request.model,
                    model_repo=request.model_repo,
                    model_filename=request.model_filename,
                    size=request.size,
                    default_size=s.size,
                    default_path=s.model_path,
                    model_dir=s.model_dir,
                )
            except ModelUnavailableError as exc:
                self._failed[key] = (time.monotonic(), exc)
                raise
            self._resolved[key] = spec
            return spec
