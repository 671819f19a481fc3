"""Module-level functions with the original SteadyText signatures, over lazily created default clients.

``agenerate``/``agenerate_iter`` are the native async API (keyword-only options). ``generate``/``generate_iter``
are sync shims that keep the original positional order for compatibility.

There is one lightweight default client per event loop (weakly keyed, so ``asyncio.run`` called many times leaves
nothing behind) plus one for the sync shims; all of them share one local provider (owned here: one worker pool for
the process; a forked child starts its own on first use) and the engine's result cache.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Unpack, overload

from ._models import Chunk, GenerationRequest, GenerationResult
from ._options import LEGACY_GENERATE, LEGACY_GENERATE_ITER, GenerateOptions, StreamOptions, legacy_options
from ._process import on_fork
from ._validate import build_request

if TYPE_CHECKING:
    import asyncio

    # Imported on the first call (asyncio, the settings, the engine, the client): `import`, the first attribute and
    # building a request stay cheap.
    from ._client import AsyncSteadyText
    from ._config import Settings
    from ._engine.engine import Engine
    from .providers.local import LocalProvider

__all__ = [
    "GeneratedText",
    "aclose",
    "agenerate",
    "agenerate_iter",
    "agenerate_object",
    "apreload_models",
    "close",
    "default_client",
    "generate",
    "generate_iter",
    "generate_object",
    "preload_models",
]

T = TypeVar("T")

_lock = threading.Lock()
_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncSteadyText] = weakref.WeakKeyDictionary()
_settings: Settings | None = None
_local: LocalProvider | None = None  # shared by every default client (their aclose() leaves it running)


def _new_default() -> AsyncSteadyText:
    global _settings, _local
    from ._client import AsyncSteadyText
    from ._config import Settings
    from .providers.local import LocalProvider

    if _settings is None:
        _settings = Settings.from_env()
    if _local is None:
        _local = LocalProvider(_settings, shared=True)
    return AsyncSteadyText(_settings, _shared_local=_local)


def default_client() -> AsyncSteadyText:
    """The client the module-level functions use on this event loop (configured from ``STEADYTEXT_*``); outside
    a running loop, the one the sync shims use. Every default client shares the engine's worker pool."""
    try:
        import asyncio

        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = engine().portal.loop
    client = _defaults.get(loop)
    if client is None:
        with _lock:
            client = _defaults.get(loop)
            if client is None:
                client = _defaults[loop] = _new_default()
    return client


def engine() -> Engine:
    """The process's engine (imported on first use)."""
    from ._engine import engine as current

    return current()


def _forget_defaults() -> None:
    global _lock
    _lock = threading.Lock()
    _defaults.clear()


on_fork(child=_forget_defaults)


class GeneratedText(str):
    """A ``str`` (the generated text) that also carries the full :class:`GenerationResult` as ``.result``."""

    result: GenerationResult

    def __new__(cls, result: GenerationResult) -> GeneratedText:
        self = super().__new__(cls, result.text)
        self.result = result
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (GeneratedText, (self.result,))

    @property
    def fallback(self) -> bool:
        """True when this is deterministic fallback text, not model output."""
        return self.result.fallback


_Shaped = GeneratedText | tuple[GeneratedText, dict[str, Any] | None]


def _shape(result: GenerationResult, logprobs: bool) -> _Shaped:
    text = GeneratedText(result)
    return (text, result.logprobs_dict()) if logprobs else text


def _item(chunk: Chunk, include_logprobs: bool) -> str | dict[str, Any]:
    if include_logprobs:
        return {"token": chunk.text, "logprob": chunk.logprob}
    return chunk.text


def _pydantic(schema: Any, result: GenerationResult) -> Any:
    """``return_pydantic=True``: the instance of a Pydantic model ``schema`` (the client checked the text)."""
    from pydantic import BaseModel

    from .structured.validate import to_value

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return to_value(schema, result.text)
    return None


@overload
async def agenerate(
    prompt: str | None = None,
    *,
    return_logprobs: Literal[False] = False,
    return_pydantic: Literal[False] = False,
    **options: Unpack[GenerateOptions],
) -> GeneratedText: ...
@overload
async def agenerate(
    prompt: str | None = None,
    *,
    return_logprobs: Literal[True],
    return_pydantic: Literal[False] = False,
    **options: Unpack[GenerateOptions],
) -> tuple[GeneratedText, dict[str, Any] | None]: ...
@overload
async def agenerate(
    prompt: str | None = None,
    *,
    return_logprobs: bool = False,
    return_pydantic: bool = False,
    **options: Unpack[GenerateOptions],
) -> Any: ...
async def agenerate(
    prompt: str | None = None,
    *,
    return_logprobs: bool = False,
    return_pydantic: bool = False,
    **options: Unpack[GenerateOptions],
) -> Any:
    """Generate text. Returns the text (a :class:`GeneratedText`), or ``(text, logprobs)`` with
    ``return_logprobs=True``, or with ``return_pydantic=True`` and a Pydantic model ``schema`` the validated
    instance. Same inputs give the same bytes. Options: see :mod:`._options`."""
    request = build_request(prompt, return_logprobs=return_logprobs, **options)
    result = await default_client().run_request(request)
    instance = _pydantic(options.get("schema"), result) if return_pydantic else None
    return instance if instance is not None else _shape(result, request.logprobs)


@overload
def agenerate_iter(
    prompt: str | None = None, *, include_logprobs: Literal[False] = False, **options: Unpack[StreamOptions]
) -> AsyncIterator[str]: ...
@overload
def agenerate_iter(
    prompt: str | None = None, *, include_logprobs: Literal[True], **options: Unpack[StreamOptions]
) -> AsyncIterator[dict[str, Any]]: ...
@overload
def agenerate_iter(
    prompt: str | None = None, *, include_logprobs: bool, **options: Unpack[StreamOptions]
) -> AsyncIterator[str | dict[str, Any]]: ...
async def agenerate_iter(
    prompt: str | None = None, *, include_logprobs: bool = False, **options: Unpack[StreamOptions]
) -> AsyncIterator[str | dict[str, Any]]:
    """Stream text pieces (whole UTF-8 characters); with ``include_logprobs=True`` yield
    ``{"token": piece, "logprob": float}``. Joined, the pieces equal :func:`agenerate`'s text."""
    request = build_request(prompt, return_logprobs=include_logprobs, **options)
    async for item in default_client().stream_request(request):
        if isinstance(item, Chunk) and item.text:
            yield _item(item, include_logprobs)


@overload
def generate(
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    /,
    *,
    return_logprobs: Literal[True],
    **options: Unpack[GenerateOptions],
) -> tuple[GeneratedText, dict[str, Any] | None]: ...
@overload
def generate(
    prompt: str | None, max_new_tokens: int | None, return_logprobs: Literal[True], /, *args: Any, **options: Any
) -> tuple[GeneratedText, dict[str, Any] | None]: ...
@overload
def generate(
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    return_logprobs: Literal[False] = False,
    /,
    *args: Any,
    **options: Unpack[GenerateOptions],
) -> GeneratedText: ...
@overload
def generate(prompt: str | None = None, /, *args: Any, **options: Any) -> Any: ...
def generate(prompt: str | None = None, /, *args: Any, **options: Any) -> Any:
    """Blocking :func:`agenerate`, with the original SteadyText positional order (``prompt, max_new_tokens,
    return_logprobs, eos_string, model, model_repo, model_filename, size, seed, temperature, schema, regex,
    choices, response_format, unsafe_mode, return_pydantic``; ``strict`` by keyword). Safe from threads and
    inside a running loop."""
    options = legacy_options("generate", LEGACY_GENERATE, args, options)
    return_pydantic = options.pop("return_pydantic", False)
    request = build_request(prompt, **options)
    result = default_client().run_request_blocking(request)
    instance = _pydantic(options.get("schema"), result) if return_pydantic else None
    return instance if instance is not None else _shape(result, request.logprobs)


@overload
def generate_iter(
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    /,
    *,
    include_logprobs: Literal[True],
    **options: Unpack[StreamOptions],
) -> Iterator[dict[str, Any]]: ...
@overload
def generate_iter(
    prompt: str | None,
    max_new_tokens: int | None,
    eos_string: str,
    include_logprobs: Literal[True],
    /,
    *args: Any,
    **options: Any,
) -> Iterator[dict[str, Any]]: ...
@overload
def generate_iter(
    prompt: str | None = None,
    max_new_tokens: int | None = None,
    eos_string: str = "[EOS]",
    include_logprobs: Literal[False] = False,
    /,
    *args: Any,
    **options: Unpack[StreamOptions],
) -> Iterator[str]: ...
@overload
def generate_iter(prompt: str | None = None, /, *args: Any, **options: Any) -> Iterator[str | dict[str, Any]]: ...
def generate_iter(prompt: str | None = None, /, *args: Any, **options: Any) -> Iterator[str | dict[str, Any]]:
    """Blocking :func:`agenerate_iter`, with the original positional order (``prompt, max_new_tokens, eos_string,
    include_logprobs, model, model_repo, model_filename, size, seed, temperature, unsafe_mode``)."""
    options = legacy_options("generate_iter", LEGACY_GENERATE_ITER, args, options)
    include_logprobs = options.pop("include_logprobs", False)
    request = build_request(prompt, return_logprobs=include_logprobs, **options)
    return _iter_sync(request, include_logprobs)


def _iter_sync(request: GenerationRequest, include_logprobs: bool) -> Iterator[str | dict[str, Any]]:
    for item in default_client().iterate_request_blocking(request):
        if isinstance(item, Chunk) and item.text:
            yield _item(item, include_logprobs)


@overload
async def agenerate_object(prompt: str | None = None, *, schema: type[T], **kwargs: Unpack[StreamOptions]) -> T: ...
@overload
async def agenerate_object(prompt: str | None = None, *, schema: Any, **kwargs: Unpack[StreamOptions]) -> Any: ...
async def agenerate_object(prompt: str | None = None, *, schema: Any, **kwargs: Unpack[StreamOptions]) -> Any:
    """Generate under ``schema`` and return the parsed, validated value: an instance of a Pydantic model,
    dataclass or other type, or the decoded JSON for a dict schema. Other keywords as :func:`agenerate`."""
    from .structured.validate import to_value

    request = build_request(prompt, schema=schema, **kwargs)
    result = await default_client().run_request(request)
    return to_value(schema, result.text)  # the client already checked the text against the schema


@overload
def generate_object(prompt: str | None = None, *, schema: type[T], **kwargs: Unpack[StreamOptions]) -> T: ...
@overload
def generate_object(prompt: str | None = None, *, schema: Any, **kwargs: Unpack[StreamOptions]) -> Any: ...
def generate_object(prompt: str | None = None, *, schema: Any, **kwargs: Unpack[StreamOptions]) -> Any:
    """Blocking :func:`agenerate_object`."""
    from .structured.validate import to_value

    request = build_request(prompt, schema=schema, **kwargs)
    result = default_client().run_request_blocking(request)
    return to_value(schema, result.text)  # the client already checked the text against the schema


async def apreload_models(
    *,
    size: str | None = None,
    model: str | None = None,
    model_repo: str | None = None,
    model_filename: str | None = None,
) -> None:
    """Resolve the model (assembling the embedded one if needed) and start its worker processes."""
    await default_client().preload(size=size, model=model, model_repo=model_repo, model_filename=model_filename)


def preload_models(verbose: bool = False, size: str | None = None) -> None:
    """Blocking :func:`apreload_models` (original signature; ``verbose`` is accepted and ignored)."""
    request = build_request("", size=size)
    default_client().preload_blocking(request)


async def _close_defaults() -> None:
    """Stop the shared workers and finish the default clients' cache writes. The next call makes new default
    clients, which read the environment again (a client reads it once, when it is made)."""
    global _settings, _local
    with _lock:
        settings, local = _settings, _local
        _settings = _local = None
        _defaults.clear()
    if local is not None:
        await local.aclose()
    if settings is not None:
        await engine().drain_cache(settings)


async def aclose() -> None:
    """Stop the module-level functions' worker processes and flush their cache (both restart on the next call, which
    reads the ``STEADYTEXT_*`` settings, API keys and base URLs from the environment again)."""
    await engine().portal.call(_close_defaults())


def close() -> None:
    """Blocking :func:`aclose`."""
    engine().portal.run(_close_defaults())
