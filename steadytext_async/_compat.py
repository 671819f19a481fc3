"""The original SteadyText's structured-generation helpers, for code migrating with one changed import.

``generate_json``, ``generate_regex``, ``generate_choice``, ``generate_format`` and ``generate_pydantic`` keep the
original names, positional order and defaults (``max_tokens=512``, ``model=None``, ``unsafe_mode=False``,
``seed=DEFAULT_SEED``); extra keywords (``temperature``, ``size``, ``eos_string``...) go to :func:`generate`.
Each has an async twin with an ``a`` prefix. They are thin layers over ``generate(schema=/regex=/choices=)``.

Each helper is written once, as a function that turns its arguments into a :class:`_Call` (what to pass to
``generate`` and what to do with the result); :func:`_sync` and :func:`_async` make the two public functions of it,
with the helper's signature (and, for mypy, its overloads).

One deliberate difference: the original wrapped JSON output as ``<thoughts><json-output>{...}</json-output>``;
here the output *is* the document (valid, parseable, within ``max_tokens``), with no tags and no preamble.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Literal, ParamSpec, TypeVar, Unpack, overload

from pydantic import BaseModel

from . import _api
from ._exceptions import InvalidRequestError
from ._options import CompatOptions
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
P = ParamSpec("P")
R = TypeVar("R")

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


@dataclasses.dataclass(frozen=True, slots=True)
class _Call(Generic[R]):
    """One helper call: the arguments of ``generate`` and what to make of its result."""

    prompt: str | None  # None: ``messages=`` is among the caller's keywords
    max_tokens: int
    options: dict[str, Any]  # model, unsafe_mode, seed and the constraint
    extra: CompatOptions  # the caller's other keywords: a repeated keyword is a TypeError, as in a direct call
    finish: Callable[[Any], R]

    def run(self) -> R:
        return self.finish(_api.generate(self.prompt, self.max_tokens, **self.options, **self.extra))

    async def arun(self) -> R:
        result = await _api.agenerate(self.prompt, max_new_tokens=self.max_tokens, **self.options, **self.extra)
        return self.finish(result)


def _sync(helper: Callable[P, _Call[R]]) -> Callable[P, R]:
    """``generate_<name>`` of the helper ``_<name>``, with its signature (mypy keeps the helper's overloads)."""

    def sync(*args: P.args, **kwargs: P.kwargs) -> R:
        return helper(*args, **kwargs).run()

    _dress(sync, helper, "generate" + helper.__name__, helper.__doc__)
    return sync


def _async(helper: Callable[P, _Call[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """``agenerate_<name>``: the async twin of ``generate_<name>``."""

    async def asynchronous(*args: P.args, **kwargs: P.kwargs) -> R:
        return await helper(*args, **kwargs).arun()

    _dress(asynchronous, helper, "agenerate" + helper.__name__, f"Async :func:`generate{helper.__name__}`.")
    return asynchronous


def _dress(fn: Any, helper: Callable[..., Any], name: str, doc: str | None) -> None:
    """Give ``fn`` the public name, the docstring and the signature (returning the result type) of ``helper``."""
    functools.update_wrapper(fn, helper)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    signature = inspect.signature(helper)  # its return annotation is the string "_Call[<result type>]"
    fn.__signature__ = signature.replace(return_annotation=str(signature.return_annotation)[len("_Call[") : -1])


def _call(
    prompt: str | None,
    max_tokens: int,
    model: str | None,
    unsafe_mode: bool,
    seed: int,
    extra: CompatOptions,
    finish: Callable[[Any], R],
    **constraint: Any,
) -> _Call[R]:
    return _Call(
        prompt, max_tokens, {"model": model, "unsafe_mode": unsafe_mode, "seed": seed, **constraint}, extra, finish
    )


# ---- the helpers ------------------------------------------------------------------------------------------------


@overload
def _json(
    prompt: str | None,
    schema: type[M],
    max_tokens: int = ...,
    model: str | None = ...,
    unsafe_mode: bool = ...,
    seed: int = ...,
    *,
    return_pydantic: Literal[True],
    **kwargs: Unpack[CompatOptions],
) -> _Call[M]: ...
@overload
def _json(
    prompt: str | None,
    schema: Any,
    max_tokens: int = ...,
    model: str | None = ...,
    unsafe_mode: bool = ...,
    seed: int = ...,
    return_pydantic: bool = ...,
    **kwargs: Unpack[CompatOptions],
) -> _Call[Any]: ...
def _json(
    prompt: str | None,
    schema: Any,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    return_pydantic: bool = False,
    **kwargs: Unpack[CompatOptions],
) -> _Call[Any]:
    """JSON valid for ``schema`` (a JSON-schema dict, Pydantic model or Python type), as text; with
    ``return_pydantic=True`` and a Pydantic model, the validated instance."""
    finish = functools.partial(_json_result, schema, return_pydantic=return_pydantic)
    return _call(prompt, max_tokens, model, unsafe_mode, seed, kwargs, finish, schema=schema)


def _regex(
    prompt: str | None,
    pattern: str,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Unpack[CompatOptions],
) -> _Call[str]:
    """Text the regex ``pattern`` matches in full."""
    return _call(prompt, max_tokens, model, unsafe_mode, seed, kwargs, _text, regex=pattern)


def _choice(
    prompt: str | None,
    choices: list[str],
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Unpack[CompatOptions],
) -> _Call[str]:
    """Exactly one of ``choices``."""
    return _call(prompt, max_tokens, model, unsafe_mode, seed, kwargs, _text, choices=choices)


def _format(
    prompt: str | None,
    format_type: type,
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Unpack[CompatOptions],
) -> _Call[str]:
    """A JSON value of ``format_type`` (int, float, bool or str -- a str comes back as a quoted JSON string)."""
    schema = _format_schema(format_type)
    return _call(prompt, max_tokens, model, unsafe_mode, seed, kwargs, _text, schema=schema)


def _pydantic(
    prompt: str | None,
    model_class: type[M],
    max_tokens: int = 512,
    model: str | None = None,
    unsafe_mode: bool = False,
    seed: int = DEFAULT_SEED,
    **kwargs: Unpack[CompatOptions],
) -> _Call[M]:
    """An instance of ``model_class`` (``generate_json(..., return_pydantic=True)``)."""
    cls = _model_class(model_class)
    return _call(
        prompt,
        max_tokens,
        model,
        unsafe_mode,
        seed,
        kwargs,
        functools.partial(_json_result, cls, return_pydantic=True),
        schema=cls,
    )


generate_json, agenerate_json = _sync(_json), _async(_json)
generate_regex, agenerate_regex = _sync(_regex), _async(_regex)
generate_choice, agenerate_choice = _sync(_choice), _async(_choice)
generate_format, agenerate_format = _sync(_format), _async(_format)
generate_pydantic, agenerate_pydantic = _sync(_pydantic), _async(_pydantic)
