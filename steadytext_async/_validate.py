"""Argument validation: raw call arguments -> :class:`GenerationRequest`, or a clear error before any work."""

from __future__ import annotations

import math
import threading

from ._exceptions import InvalidRequestError
from ._messages import ChatMessage, byte_size, check_messages
from ._models import GenerationRequest, SamplingParams
from ._options import DEFAULT_SEED
from ._registry import check_selectors
from ._tools import check_tool_choice, check_tools
from ._unicode import check_text
from ._worker.limits import MAX_PROMPT_BYTES
from .structured.normalize import normalize

__all__ = ["DEFAULT_SEED", "build_request"]


DEFAULT_MAX_NEW_TOKENS = 512
_seed_warned = threading.Event()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_int(value: int) -> int:
    """``value`` as pydantic stores an ``int`` field: a plain int (an ``IntEnum`` member becomes its value)."""
    return int.__int__(value)


def _exact_str(value: str) -> str:
    """``value`` as pydantic stores a ``str`` field: a plain str (a ``str`` subclass or enum becomes its text)."""
    return str.__str__(value)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_opt_str(name: str, value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a str or None, got {type(value).__name__}")
    if value is None:
        return None
    check_text(name, value)
    return _exact_str(value)


def _check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str):
        raise InvalidRequestError(f"prompt must be a str, got {type(prompt).__name__}")
    check_text("prompt", prompt)
    if len(prompt) > MAX_PROMPT_BYTES // 4 and len(prompt.encode("utf-8")) > MAX_PROMPT_BYTES:
        raise InvalidRequestError(
            f"prompt is {len(prompt.encode('utf-8'))} bytes of UTF-8; the limit is {MAX_PROMPT_BYTES} "
            "(the worker frame limit)"
        )
    return _exact_str(prompt)


def _check_input(prompt: object, messages: object) -> tuple[str | None, tuple[ChatMessage, ...] | None]:
    """Exactly one of ``prompt`` and ``messages``, checked."""
    if messages is None:
        if prompt is None:
            raise InvalidRequestError("pass a prompt or messages")
        return _check_prompt(prompt), None
    if prompt is not None:
        raise InvalidRequestError("pass either prompt or messages, not both")
    checked = check_messages(messages)
    size = byte_size(checked)
    if size > MAX_PROMPT_BYTES:
        raise InvalidRequestError(
            f"messages hold {size} bytes of UTF-8; the limit is {MAX_PROMPT_BYTES} (the worker frame limit)"
        )
    return None, checked


def _check_max_new_tokens(value: object) -> int:
    if value is None:
        return DEFAULT_MAX_NEW_TOKENS
    if not _is_int(value):
        raise InvalidRequestError(f"max_new_tokens must be an int, got {type(value).__name__}")
    assert isinstance(value, int)
    if value < 1:
        raise InvalidRequestError(f"max_new_tokens must be >= 1, got {value}")
    return _exact_int(value)


def _check_eos(value: object) -> str:
    if not isinstance(value, str) or value == "":
        raise InvalidRequestError("eos_string must be a non-empty str ('[EOS]' means the model's end token)")
    check_text("eos_string", value)
    return _exact_str(value)


def _check_seed(value: object) -> int:
    if not _is_int(value):
        raise InvalidRequestError(f"seed must be an int, got {type(value).__name__}")
    assert isinstance(value, int)
    if not 0 <= value < 2**64:
        raise InvalidRequestError(f"seed must be in [0, 2**64), got {value}")
    return _exact_int(value)


def _check_temperature(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"temperature must be a number, got {type(value).__name__}")
    temp = float(value)
    if math.isnan(temp) or math.isinf(temp) or temp < 0:
        raise InvalidRequestError(f"temperature must be a finite number >= 0, got {value}")
    return temp


def _warn_seed_ignored(seed: int) -> None:
    """Once per process: a seed other than the default does nothing at temperature 0."""
    if _seed_warned.is_set():
        return
    import logging  # only here: logging is not needed to build a request (start-up time)

    _seed_warned.set()
    logging.getLogger("steadytext_async").warning(
        "seed=%s has no effect at temperature=0: greedy decoding always picks the most likely token, "
        "so every seed gives the same text. Use temperature > 0 for seed-dependent output.",
        seed,
    )


def build_request(
    prompt: object = None,
    *,
    messages: object = None,
    max_new_tokens: object = None,
    return_logprobs: object = False,
    eos_string: object = "[EOS]",
    model: object = None,
    model_repo: object = None,
    model_filename: object = None,
    size: object = None,
    seed: object = DEFAULT_SEED,
    temperature: object = 0.0,
    schema: object = None,
    regex: object = None,
    choices: object = None,
    response_format: object = None,
    unsafe_mode: object = False,
    strict: object = None,
    tools: object = None,
    tool_choice: object = None,
) -> GenerationRequest:
    prompt_s, messages_t = _check_input(prompt, messages)
    max_new = _check_max_new_tokens(max_new_tokens)
    logprobs = _check_bool("return_logprobs", return_logprobs)
    eos = _check_eos(eos_string)
    seed_i = _check_seed(seed)
    temp = _check_temperature(temperature)
    unsafe = _check_bool("unsafe_mode", unsafe_mode)  # or the client's Settings.unsafe_mode (the router's gate)
    if strict is not None:
        _check_bool("strict", strict)
    model_s = _check_opt_str("model", model)
    repo_s = _check_opt_str("model_repo", model_repo)
    file_s = _check_opt_str("model_filename", model_filename)
    size_s = _check_opt_str("size", size)
    check_selectors(model=model_s, model_repo=repo_s, model_filename=file_s, size=size_s)
    # The unsafe_mode gate is the router's (it knows which providers are deterministic), before any byte is sent.
    constraint = normalize(schema=schema, regex=regex, choices=choices, response_format=response_format)
    if constraint is not None and eos != "[EOS]":
        raise InvalidRequestError(
            "eos_string cannot be combined with schema/regex/choices/response_format: "
            "a stop string could cut the structured output short"
        )
    tools_t = check_tools(tools)
    choice = check_tool_choice(tool_choice, tools_t)
    if tools_t is not None and constraint is not None:
        raise InvalidRequestError("tools cannot be combined with schema/regex/choices/response_format")
    if tools_t is not None and eos != "[EOS]":
        raise InvalidRequestError("eos_string cannot be combined with tools: a stop string could cut a call short")
    if temp == 0.0 and seed_i != DEFAULT_SEED:
        _warn_seed_ignored(seed_i)
    # Every value is checked above and has the exact type pydantic would store (see _exact_int/_exact_str), so the
    # request is built without validating it again (that would build the models' validators: start-up time).
    return GenerationRequest.model_construct(
        prompt=prompt_s,
        messages=messages_t,
        max_new_tokens=max_new,
        eos_string=eos,
        sampling=SamplingParams.model_construct(temperature=temp, seed=seed_i),
        logprobs=logprobs,
        model=model_s,
        model_repo=repo_s,
        model_filename=file_s,
        size=size_s,
        unsafe_mode=unsafe,
        strict=strict if isinstance(strict, bool) else None,
        constraint=constraint,
        tools=tools_t,
        tool_choice=choice,
    )
