"""steadytext-async: asyncio-native deterministic text generation.

import steadytext_async as steadytext
text = await steadytext.agenerate("Once upon a time")   # same bytes every time
"""

from ._api import (
    GeneratedText,
    aclose,
    agenerate,
    agenerate_iter,
    apreload_models,
    close,
    default_client,
    generate,
    generate_iter,
    preload_models,
)
from ._client import AsyncSteadyText
from ._config import Settings
from ._exceptions import (
    ConstraintError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    SteadyTextError,
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
from ._registry import REGISTRY, SIZES
from ._sync import SteadyText
from ._validate import DEFAULT_SEED
from ._version import __version__

__all__ = [
    "DEFAULT_SEED",
    "REGISTRY",
    "SIZES",
    "AsyncSteadyText",
    "Chunk",
    "ConstraintError",
    "Fingerprint",
    "GeneratedText",
    "GenerationRequest",
    "GenerationResult",
    "InvalidRequestError",
    "ModelNotFoundError",
    "ModelSpec",
    "ModelUnavailableError",
    "SamplingParams",
    "Settings",
    "SteadyText",
    "SteadyTextError",
    "Timings",
    "TokenLogprob",
    "TopLogprob",
    "UnsafeModeRequiredError",
    "Usage",
    "WorkerError",
    "__version__",
    "aclose",
    "agenerate",
    "agenerate_iter",
    "apreload_models",
    "close",
    "default_client",
    "generate",
    "generate_iter",
    "preload_models",
]
