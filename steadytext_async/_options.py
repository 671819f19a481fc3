"""The generation options, typed once (PEP 692): the module functions, the clients and the CLI share them.

Defaults (applied by :func:`._validate.build_request`): ``max_new_tokens=512``, ``eos_string="[EOS]"`` (stop at
the model's end token), ``seed=DEFAULT_SEED``, ``temperature=0.0`` (greedy), ``unsafe_mode=False`` (or the
client's ``unsafe_mode``, from ``STEADYTEXT_UNSAFE_MODE``), ``strict=None`` (the client's setting); no model
selector means the configured default model, and at most one of ``schema``/``regex``/``choices``/``response_format``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

__all__ = [
    "DEFAULT_MIN_P",
    "DEFAULT_SEED",
    "DEFAULT_TOP_K",
    "DEFAULT_TOP_LOGPROBS",
    "DEFAULT_TOP_P",
    "LEGACY_GENERATE",
    "LEGACY_GENERATE_ITER",
    "CompatOptions",
    "GenerateOptions",
    "ModelOptions",
    "RequestOptions",
    "StreamOptions",
]


DEFAULT_SEED = 42  # the one place the default seed is written
# sampling at temperature > 0 (seeded top-k -> min-p -> top-p), and alternatives per token with logprobs: written once
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
DEFAULT_MIN_P = 0.05
DEFAULT_TOP_LOGPROBS = 5


class ModelOptions(TypedDict, total=False):
    """Which model: a registry name, a ``.gguf`` path or ``provider:model_id``; a Hub file; or a size."""

    model: str | None
    model_repo: str | None
    model_filename: str | None
    size: str | None


class StreamOptions(ModelOptions, total=False):
    messages: Sequence[Any] | None  # OpenAI-shaped chat messages, instead of the prompt
    max_new_tokens: int | None
    eos_string: str
    seed: int
    temperature: float
    unsafe_mode: bool
    strict: bool | None
    tools: Sequence[Any] | None  # OpenAI-shaped function tools (see _tools)
    tool_choice: Any  # "auto" (default with tools), "none", "required" or {"type": "function", "function": {...}}


class GenerateOptions(StreamOptions, total=False):
    """Everything but ``return_logprobs`` (which the module functions take explicitly, to type their result)."""

    schema: Any
    regex: str | None
    choices: list[str] | None
    response_format: dict[str, Any] | None


class CompatOptions(TypedDict, total=False):
    """What the original SteadyText helpers (``generate_json``...) pass on to ``generate`` besides their own
    positional ``max_tokens``, ``model``, ``unsafe_mode`` and ``seed``."""

    messages: Sequence[Any] | None  # a conversation instead of the prompt (pass None as the prompt)
    model_repo: str | None
    model_filename: str | None
    size: str | None
    eos_string: str
    temperature: float
    strict: bool | None


class RequestOptions(GenerateOptions, total=False):
    """The clients' options: the result is a :class:`GenerationResult` whatever ``return_logprobs`` is."""

    return_logprobs: bool


# The original SteadyText positional order of the sync module functions (after ``prompt``), kept for compatibility.
_SELECT_AND_SAMPLE = ("model", "model_repo", "model_filename", "size", "seed", "temperature")
LEGACY_GENERATE = (
    "max_new_tokens",
    "return_logprobs",
    "eos_string",
    *_SELECT_AND_SAMPLE,
    "schema",
    "regex",
    "choices",
    "response_format",
    "unsafe_mode",
    "return_pydantic",
)
LEGACY_GENERATE_ITER = ("max_new_tokens", "eos_string", "include_logprobs", *_SELECT_AND_SAMPLE, "unsafe_mode")


def legacy_options(name: str, order: tuple[str, ...], args: tuple[Any, ...], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the positional ``args`` of ``name`` filled in by the original order."""
    if len(args) > len(order):
        raise TypeError(f"{name}() takes at most {len(order) + 1} positional arguments ({len(args) + 1} given)")
    for key, value in zip(order, args, strict=False):
        if key in options:
            raise TypeError(f"{name}() got multiple values for argument {key!r}")
        options[key] = value
    return options
