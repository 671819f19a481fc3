"""Module-level functions with the original SteadyText signatures, over lazily created default clients.

``agenerate``/``agenerate_iter`` are the native async API (keyword-only options). ``generate``/``generate_iter``
are sync shims that keep the original positional order for compatibility.

There is one lightweight default client per event loop (weakly keyed, so ``asyncio.run`` called many times leaves
nothing behind) plus one for the sync shims; all of them share the engine's worker pool and result cache.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar, overload

from ._client import AsyncSteadyText
from ._config import Settings
from ._engine import engine
from ._models import Chunk, GenerationResult
from ._validate import DEFAULT_SEED, build_request

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


def _new_default() -> AsyncSteadyText:
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return AsyncSteadyText(_settings, _shared_local=engine().default_local(_settings))


def default_client() -> AsyncSteadyText:
    """The client the module-level functions use on this event loop (configured from ``STEADYTEXT_*``); outside
    a running loop, the one the sync shims use. Every default client shares the engine's worker pool."""
    try:
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


def _forget_defaults() -> None:
    global _lock
    _lock = threading.Lock()
    _defaults.clear()


os.register_at_fork(after_in_child=_forget_defaults)


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


def _shape(result: GenerationResult, logprobs: bool) -> GeneratedText | tuple[GeneratedText, dict[str, Any] | None]:
    text = GeneratedText(result)
    return (text, result.logprobs_dict()) if logprobs else text


def _is_model(schema: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(schema, type) and issubclass(schema, BaseModel)


def _parse(schema: Any, text: str) -> Any:
    from .structured import parse

    return parse(schema, text)


def _item(chunk: Chunk, include_logprobs: bool) -> str | dict[str, Any]:
    if include_logprobs:
        return {"token": chunk.text, "logprob": chunk.logprob}
    return chunk.text


async def agenerate(
    prompt: str,
    *,
    max_new_tokens: int | None = None,
    return_logprobs: bool = False,
    eos_string: str = "[EOS]",
    model: str | None = None,
    model_repo: str | None = None,
    model_filename: str | None = None,
    size: str | None = None,
    seed: int = DEFAULT_SEED,
    temperature: float = 0.0,
    schema: Any = None,
    regex: str | None = None,
    choices: list[str] | None = None,
    response_format: dict[str, Any] | None = None,
    unsafe_mode: bool = False,
    strict: bool | None = None,
    return_pydantic: bool = False,
) -> str | tuple[str, dict[str, Any] | None] | Any:
    """Generate text. Returns the text (a :class:`GeneratedText`), or ``(text, logprobs)`` with
    ``return_logprobs=True``, or with ``return_pydantic=True`` and a Pydantic model ``schema`` the validated
    instance. Same inputs give the same bytes."""
    request = build_request(
        prompt,
        max_new_tokens=max_new_tokens,
        return_logprobs=return_logprobs,
        eos_string=eos_string,
        model=model,
        model_repo=model_repo,
        model_filename=model_filename,
        size=size,
        seed=seed,
        temperature=temperature,
        schema=schema,
        regex=regex,
        choices=choices,
        response_format=response_format,
        unsafe_mode=unsafe_mode,
        strict=strict,
    )
    result = await default_client()._agenerate(request)
    if return_pydantic and _is_model(schema):
        return _parse(schema, result.text)
    return _shape(result, request.logprobs)


async def agenerate_iter(
    prompt: str,
    *,
    max_new_tokens: int | None = None,
    eos_string: str = "[EOS]",
    include_logprobs: bool = False,
    model: str | None = None,
    model_repo: str | None = None,
    model_filename: str | None = None,
    size: str | None = None,
    seed: int = DEFAULT_SEED,
    temperature: float = 0.0,
    unsafe_mode: bool = False,
    strict: bool | None = None,
) -> AsyncIterator[str | dict[str, Any]]:
    """Stream text pieces (whole UTF-8 characters); with ``include_logprobs=True`` yield
    ``{"token": piece, "logprob": float}``. Joined, the pieces equal :func:`agenerate`'s text."""
    request = build_request(
        prompt,
        max_new_tokens=max_new_tokens,
        return_logprobs=include_logprobs,
        eos_string=eos_string,
        model=model,
        model_repo=model_repo,
        model_filename=model_filename,
        size=size,
        seed=seed,
        temperature=temperature,
        unsafe_mode=unsafe_mode,
        strict=strict,
    )
    async for item in default_client()._astream(request):
        if isinstance(item, Chunk) and item.text:
            yield _item(item, include_logprobs)


def generate(
    prompt: str,
    max_new_tokens: int | None = None,
    return_logprobs: bool = False,
    eos_string: str = "[EOS]",
    model: str | None = None,
    model_repo: str | None = None,
    model_filename: str | None = None,
    size: str | None = None,
    seed: int = DEFAULT_SEED,
    temperature: float = 0.0,
    schema: Any = None,
    regex: str | None = None,
    choices: list[str] | None = None,
    response_format: dict[str, Any] | None = None,
    unsafe_mode: bool = False,
    return_pydantic: bool = False,
    *,
    strict: bool | None = None,
) -> str | tuple[str, dict[str, Any] | None] | Any:
    """Blocking :func:`agenerate` (original SteadyText signature). Safe from threads and inside a running loop."""
    request = build_request(
        prompt,
        max_new_tokens=max_new_tokens,
        return_logprobs=return_logprobs,
        eos_string=eos_string,
        model=model,
        model_repo=model_repo,
        model_filename=model_filename,
        size=size,
        seed=seed,
        temperature=temperature,
        schema=schema,
        regex=regex,
        choices=choices,
        response_format=response_format,
        unsafe_mode=unsafe_mode,
        strict=strict,
    )
    result = default_client()._generate_blocking(request)
    if return_pydantic and _is_model(schema):
        return _parse(schema, result.text)
    return _shape(result, request.logprobs)


def generate_iter(
    prompt: str,
    max_new_tokens: int | None = None,
    eos_string: str = "[EOS]",
    include_logprobs: bool = False,
    model: str | None = None,
    model_repo: str | None = None,
    model_filename: str | None = None,
    size: str | None = None,
    seed: int = DEFAULT_SEED,
    temperature: float = 0.0,
    unsafe_mode: bool = False,
    *,
    strict: bool | None = None,
) -> Iterator[str | dict[str, Any]]:
    """Blocking :func:`agenerate_iter` (original SteadyText signature)."""
    request = build_request(
        prompt,
        max_new_tokens=max_new_tokens,
        return_logprobs=include_logprobs,
        eos_string=eos_string,
        model=model,
        model_repo=model_repo,
        model_filename=model_filename,
        size=size,
        seed=seed,
        temperature=temperature,
        unsafe_mode=unsafe_mode,
        strict=strict,
    )
    return _iter_sync(request, include_logprobs)


def _iter_sync(request: Any, include_logprobs: bool) -> Iterator[str | dict[str, Any]]:
    for item in default_client()._iterate_blocking(request):
        if isinstance(item, Chunk) and item.text:
            yield _item(item, include_logprobs)


@overload
async def agenerate_object(prompt: str, *, schema: type[T], **kwargs: Any) -> T: ...
@overload
async def agenerate_object(prompt: str, *, schema: Any, **kwargs: Any) -> Any: ...
async def agenerate_object(prompt: str, *, schema: Any, **kwargs: Any) -> Any:
    """Generate under ``schema`` and return the parsed, validated value: an instance of a Pydantic model,
    dataclass or other type, or the decoded JSON for a dict schema. Other keywords as :func:`agenerate`."""
    from .structured.validate import to_value

    request = build_request(prompt, schema=schema, **kwargs)
    result = await default_client()._agenerate(request)
    return to_value(schema, result.text)  # the client already checked the text against the schema


@overload
def generate_object(prompt: str, *, schema: type[T], **kwargs: Any) -> T: ...
@overload
def generate_object(prompt: str, *, schema: Any, **kwargs: Any) -> Any: ...
def generate_object(prompt: str, *, schema: Any, **kwargs: Any) -> Any:
    """Blocking :func:`agenerate_object`."""
    from .structured.validate import to_value

    request = build_request(prompt, schema=schema, **kwargs)
    result = default_client()._generate_blocking(request)
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
    engine().portal.run(default_client()._preload(request))


async def _close_defaults() -> None:
    if _settings is not None:
        await engine().release_defaults(_settings)


async def aclose() -> None:
    """Stop the module-level functions' worker processes and flush their cache (both restart on the next call)."""
    await engine().portal.call(_close_defaults())


def close() -> None:
    """Blocking :func:`aclose`."""
    engine().portal.run(_close_defaults())
