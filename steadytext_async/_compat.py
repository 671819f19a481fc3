"""The original SteadyText's structured-generation helpers, for code migrating with one changed import.

``generate_json``, ``generate_regex``, ``generate_choice``, ``generate_format`` and ``generate_pydantic`` keep the
original names, positional order and defaults (``max_tokens=512``, ``model=None``, ``unsafe_mode=False``,
``seed=DEFAULT_SEED``); extra keywords (``temperature``, ``size``, ``eos_string``...) go to :func:`generate`.
Each has an async twin with an ``a`` prefix. They are thin layers over ``generate(schema=/regex=/choices=)``.

One deliberate difference: the original wrapped JSON output as ``<thoughts><json-output>{...}</json-output>``;
here the output *is* the document (valid, parseable, within ``max_tokens``), with no tags and no preamble.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel

from . import _api
from ._exceptions import InvalidRequestError
from ._validate import DEFAULT_SEED

__all__ = [
    "DEFAULT_SEED",
    "agenerate_choice",
    "agenerate_format",
    "agenerate_json",
    "agenerate_pydantic",
    "agenerate_regex",
    "generate_choice",
    "generate_format",
    "generate_json",
    "generate_pydantic",
    "generate_regex",
]

M = TypeVar("M", bound=BaseModel)

_FORMAT_TYPES: tuple[type, ...] = (int, float, bool, str)


def _text(result: Any) -> str:
    return result[0] if isinstance(result, tuple) else str(result)


def _is_model(schema: Any) -> bool:
    return isinstance(schema, type) and issubclass(schema, BaseModel)


def _json_result(schema: Any, result: Any, return_pydantic: bool) -> Any:
    if return_pydantic and _is_model(schema):
        from .structured import parse

        return parse(schema, _text(result))
    return result


def _format_schema(format_type: Any) -> type:
    if format_type not in _FORMAT_TYPES:
        raise InvalidRequestError(f"format_type must be one of int, float, bool, str; got {format_type!r}")
    return format_type  # type: ignore[no-any-return]


def _model_class(model_class: Any) -> Any:
    if not _is_model(model_class):
        raise InvalidRequestError(f"model_class must be a Pydantic BaseModel class, got {model_class!r}")
    return model_class


# ---- sync -------------------------------------------------------------------------------------------------------


@overload
def generate_json(
    prompt: str,
    schema: type[M],
    max_tokens: int = ...,
    model: str | None = ...,
    unsafe_mode: bool = ...,
    seed: int = ...,
    *,
    return_pydantic: Literal[True],
    **kwargs: Any,
) -> M: ...
@overload
def generate_json(
    prompt: str,
    schema: Any,
    max_tokens: int = ...,
    model: str | None = ...,
    unsafe_mode: bool = ...,
    seed: int = ...,
    return_pydantic: bool = ...,
    **kwargs: Any,
) -> Any: ...
def generate_json(
    prompt: str,
    schema: Any,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    return_pydantic: bool = False,
    **kwargs: Any,
) -> Any:
    """JSON valid for ``schema`` (a JSON-schema dict, Pydantic model or Python type), as text; with
    ``return_pydantic=True`` and a Pydantic model, the validated instance."""
    result = _api.generate(prompt, max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, schema=schema, **kwargs)
    return _json_result(schema, result, return_pydantic)


def generate_regex(
    prompt: str,
    pattern: str,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Any,
) -> str:
    """Text the regex ``pattern`` matches in full."""
    return _text(
        _api.generate(prompt, max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, regex=pattern, **kwargs)
    )


def generate_choice(
    prompt: str,
    choices: list[str],
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Any,
) -> str:
    """Exactly one of ``choices``."""
    return _text(
        _api.generate(prompt, max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, choices=choices, **kwargs)
    )


def generate_format(
    prompt: str,
    format_type: type,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Any,
) -> str:
    """A JSON value of ``format_type`` (int, float, bool or str -- a str comes back as a quoted JSON string)."""
    schema = _format_schema(format_type)
    return _text(
        _api.generate(prompt, max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, schema=schema, **kwargs)
    )


def generate_pydantic(
    prompt: str,
    model_class: type[M],
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Any,
) -> M:
    """An instance of ``model_class`` (``generate_json(..., return_pydantic=True)``)."""
    cls = _model_class(model_class)
    result = _api.generate(prompt, max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, schema=cls, **kwargs)
    instance: M = _json_result(cls, result, True)
    return instance


# ---- async ------------------------------------------------------------------------------------------------------


@overload
async def agenerate_json(
    prompt: str,
    schema: type[M],
    max_tokens: int = ...,
    model: str | None = ...,
    unsafe_mode: bool = ...,
    seed: int = ...,
    *,
    return_pydantic: Literal[True],
    **kwargs: Any,
) -> M: ...
@overload
async def agenerate_json(
    prompt: str,
    schema: Any,
    max_tokens: int = ...,
    model: str | None = ...,
    unsafe_mode: bool = ...,
    seed: int = ...,
    return_pydantic: bool = ...,
    **kwargs: Any,
) -> Any: ...
async def agenerate_json(
    prompt: str,
    schema: Any,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    return_pydantic: bool = False,
    **kwargs: Any,
) -> Any:
    """Async :func:`generate_json`."""
    result = await _api.agenerate(
        prompt, max_new_tokens=max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, schema=schema, **kwargs
    )
    return _json_result(schema, result, return_pydantic)


async def agenerate_regex(
    prompt: str,
    pattern: str,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Any,
) -> str:
    """Async :func:`generate_regex`."""
    result = await _api.agenerate(
        prompt, max_new_tokens=max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, regex=pattern, **kwargs
    )
    return _text(result)


async def agenerate_choice(
    prompt: str,
    choices: list[str],
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Any,
) -> str:
    """Async :func:`generate_choice`."""
    result = await _api.agenerate(
        prompt, max_new_tokens=max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, choices=choices, **kwargs
    )
    return _text(result)


async def agenerate_format(
    prompt: str,
    format_type: type,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Any,
) -> str:
    """Async :func:`generate_format`."""
    schema = _format_schema(format_type)
    result = await _api.agenerate(
        prompt, max_new_tokens=max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, schema=schema, **kwargs
    )
    return _text(result)


async def agenerate_pydantic(
    prompt: str,
    model_class: type[M],
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Any,
) -> M:
    """Async :func:`generate_pydantic`."""
    cls = _model_class(model_class)
    result = await _api.agenerate(
        prompt, max_new_tokens=max_tokens, model=model, unsafe_mode=unsafe_mode, seed=seed, schema=cls, **kwargs
    )
    instance: M = _json_result(cls, result, True)
    return instance
