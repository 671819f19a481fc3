"""steadytext-async: asyncio-native deterministic text generation.

import steadytext_async as steadytext
text = await steadytext.agenerate("Once upon a time")   # same bytes every time

Attributes are imported on first use (PEP 562), so ``import steadytext_async`` stays cheap; llama.cpp itself is
only ever imported inside worker processes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._api import (
        GeneratedText,
        aclose,
        agenerate,
        agenerate_iter,
        agenerate_object,
        apreload_models,
        close,
        default_client,
        generate,
        generate_iter,
        generate_object,
        preload_models,
    )
    from ._client import AsyncSteadyText
    from ._compat import (
        agenerate_choice,
        agenerate_format,
        agenerate_json,
        agenerate_pydantic,
        agenerate_regex,
        generate_choice,
        generate_format,
        generate_json,
        generate_pydantic,
        generate_regex,
    )
    from ._config import Settings
    from ._exceptions import (
        ConsentRequiredError,
        ConstraintError,
        InvalidRequestError,
        MissingAPIKeyError,
        ModelNotFoundError,
        ModelUnavailableError,
        RemoteAuthenticationError,
        RemoteBadRequestError,
        RemoteConnectionError,
        RemoteError,
        RemoteNotFoundError,
        RemoteProtocolError,
        RemoteRateLimitError,
        RemoteServerError,
        RemoteStatusError,
        RemoteTimeoutError,
        SteadyTextError,
        UnknownProviderError,
        UnsafeModeRequiredError,
        WorkerError,
    )
    from ._models import (
        Chunk,
        Fingerprint,
        GenerationRequest,
        GenerationResult,
        ModelSpec,
        SamplingParams,
        Timings,
        TokenLogprob,
        TopLogprob,
        Usage,
    )
    from ._options import DEFAULT_SEED
    from ._registry import REGISTRY, SIZES
    from ._replay import FieldDifference, ReplayReport
    from ._sync import SteadyText
    from ._version import __version__
    from .providers.mock import MockProvider
    from .providers.presets import PRESETS, ProviderPreset, RemoteOptions, register_provider, unregister_provider
    from .structured import Constraint

_LAZY: dict[str, str] = {
    "AsyncSteadyText": "._client",
    "Chunk": "._models",
    "Constraint": ".structured",
    "ConsentRequiredError": "._exceptions",
    "ConstraintError": "._exceptions",
    "DEFAULT_SEED": "._options",
    "Fingerprint": "._models",
    "GeneratedText": "._api",
    "GenerationRequest": "._models",
    "GenerationResult": "._models",
    "InvalidRequestError": "._exceptions",
    "MissingAPIKeyError": "._exceptions",
    "MockProvider": ".providers.mock",
    "ModelNotFoundError": "._exceptions",
    "ModelSpec": "._models",
    "ModelUnavailableError": "._exceptions",
    "PRESETS": ".providers.presets",
    "ProviderPreset": ".providers.presets",
    "REGISTRY": "._registry",
    "ReplayReport": "._replay",
    "FieldDifference": "._replay",
    "RemoteAuthenticationError": "._exceptions",
    "RemoteBadRequestError": "._exceptions",
    "RemoteConnectionError": "._exceptions",
    "RemoteError": "._exceptions",
    "RemoteNotFoundError": "._exceptions",
    "RemoteOptions": ".providers.presets",
    "RemoteProtocolError": "._exceptions",
    "RemoteRateLimitError": "._exceptions",
    "RemoteServerError": "._exceptions",
    "RemoteStatusError": "._exceptions",
    "RemoteTimeoutError": "._exceptions",
    "SIZES": "._registry",
    "SamplingParams": "._models",
    "Settings": "._config",
    "SteadyText": "._sync",
    "SteadyTextError": "._exceptions",
    "Timings": "._models",
    "TokenLogprob": "._models",
    "TopLogprob": "._models",
    "UnknownProviderError": "._exceptions",
    "UnsafeModeRequiredError": "._exceptions",
    "Usage": "._models",
    "WorkerError": "._exceptions",
    "__version__": "._version",
    "aclose": "._api",
    "agenerate_choice": "._compat",
    "agenerate_format": "._compat",
    "agenerate_json": "._compat",
    "agenerate_pydantic": "._compat",
    "agenerate_regex": "._compat",
    "generate_choice": "._compat",
    "generate_format": "._compat",
    "generate_json": "._compat",
    "generate_pydantic": "._compat",
    "generate_regex": "._compat",
    "agenerate": "._api",
    "agenerate_iter": "._api",
    "agenerate_object": "._api",
    "apreload_models": "._api",
    "close": "._api",
    "default_client": "._api",
    "generate": "._api",
    "generate_iter": "._api",
    "generate_object": "._api",
    "preload_models": "._api",
    "register_provider": ".providers.presets",
    "unregister_provider": ".providers.presets",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DEFAULT_SEED",
    "PRESETS",
    "REGISTRY",
    "SIZES",
    "AsyncSteadyText",
    "Chunk",
    "ConsentRequiredError",
    "Constraint",
    "ConstraintError",
    "FieldDifference",
    "Fingerprint",
    "GeneratedText",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequestError",
    "MissingAPIKeyError",
    "MockProvider",
    "ModelNotFoundError",
    "ModelSpec",
    "ModelUnavailableError",
    "ProviderPreset",
    "RemoteAuthenticationError",
    "RemoteBadRequestError",
    "RemoteConnectionError",
    "RemoteError",
    "RemoteNotFoundError",
    "RemoteOptions",
    "RemoteProtocolError",
    "RemoteRateLimitError",
    "RemoteServerError",
    "RemoteStatusError",
    "RemoteTimeoutError",
    "ReplayReport",
    "SamplingParams",
    "Settings",
    "SteadyText",
    "SteadyTextError",
    "Timings",
    "TokenLogprob",
    "TopLogprob",
    "UnknownProviderError",
    "UnsafeModeRequiredError",
    "Usage",
    "WorkerError",
    "__version__",
    "aclose",
    "agenerate",
    "agenerate_choice",
    "agenerate_format",
    "agenerate_iter",
    "agenerate_json",
    "agenerate_object",
    "agenerate_pydantic",
    "agenerate_regex",
    "apreload_models",
    "close",
    "default_client",
    "generate",
    "generate_choice",
    "generate_format",
    "generate_iter",
    "generate_json",
    "generate_object",
    "generate_pydantic",
    "generate_regex",
    "preload_models",
    "register_provider",
    "unregister_provider",
]
