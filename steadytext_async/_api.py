"""Module-level functions with the original SteadyText signatures, over one lazily created default client.

``agenerate``/``agenerate_iter`` are the native async API (keyword-only options). ``generate``/``generate_iter``
are sync shims that keep the original positional order for compatibility.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar, overload

from ._client import AsyncSteadyText
from ._models import Chunk, GenerationResult
from ._runtime import runtime
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
_default: AsyncSteadyText | None = None


def default_client() -> AsyncSteadyText:
    """The process-wide client used by the module-level functions (configured from ``STEADYTEXT_*``)."""
    global _default
    client = _default
    if client is None:
        with _lock:
            if _default is None:
                _default = AsyncSteadyText()
            client = _default
    return client


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
) -> str | tuple[str, dict[str, Any] | None]:
    """Generate text. Returns the text (a :class:`GeneratedText`), or ``(text, logprobs)`` with
    ``return_logprobs=True``. Same inputs give the same bytes."""
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
    client = default_client()
    result = client._peek(request)
    if result is None:
        result = await runtime.call(client._generate(request))
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
    async for item in runtime.iterate(default_client()._stream(request)):
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
    *,
    strict: bool | None = None,
) -> str | tuple[str, dict[str, Any] | None]:
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
    client = default_client()
    result = client._peek(request)
    if result is None:
        result = runtime.run(client._generate(request))
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
    for item in runtime.iterate_sync(default_client()._stream(request)):
        if isinstance(item, Chunk) and item.text:
            yield _item(item, include_logprobs)


@overload
async def agenerate_object(prompt: str, *, schema: type[T], **kwargs: Any) -> T: ...
@overload
async def agenerate_object(prompt: str, *, schema: Any, **kwargs: Any) -> Any: ...
async def agenerate_object(prompt: str, *, schema: Any, **kwargs: Any) -> Any:
    """Generate under ``schema`` and return the parsed, validated value: an instance of a Pydantic model,
    dataclass or other type, or the decoded JSON for a dict schema. Other keywords as :func:`agenerate`."""
    from .structured import parse

    request = build_request(prompt, schema=schema, **kwargs)
    result = await runtime.call(default_client()._generate(request))
    return parse(schema, result.text)


@overload
def generate_object(prompt: str, *, schema: type[T], **kwargs: Any) -> T: ...
@overload
def generate_object(prompt: str, *, schema: Any, **kwargs: Any) -> Any: ...
def generate_object(prompt: str, *, schema: Any, **kwargs: Any) -> Any:
    """Blocking :func:`agenerate_object`."""
    from .structured import parse

    request = build_request(prompt, schema=schema, **kwargs)
    result = runtime.run(default_client()._generate(request))
    return parse(schema, result.text)


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
    runtime.run(default_client()._preload(request))


async def aclose() -> None:
    """Stop the default client's worker processes (they restart on the next call)."""
    if _default is not None:
        await _default.aclose()


def close() -> None:
    """Blocking :func:`aclose`."""
    if _default is not None:
        runtime.run(_default._aclose_impl())
