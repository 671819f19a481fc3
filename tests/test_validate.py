import logging
import math
from typing import Any

import pytest

import steadytext_async as st
from steadytext_async._validate import build_request


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": 123}, "prompt must be a str"),
        ({"prompt": b"bytes"}, "prompt must be a str"),
        ({"prompt": None}, "pass a prompt or messages"),
        ({"prompt": "x", "max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"prompt": "x", "max_new_tokens": -5}, "max_new_tokens must be >= 1"),
        ({"prompt": "x", "max_new_tokens": 1.5}, "max_new_tokens must be an int"),
        ({"prompt": "x", "max_new_tokens": True}, "max_new_tokens must be an int"),
        ({"prompt": "x", "max_new_tokens": "10"}, "max_new_tokens must be an int"),
        ({"prompt": "x", "temperature": -0.1}, "temperature must be a finite number >= 0"),
        ({"prompt": "x", "temperature": math.nan}, "temperature must be a finite number >= 0"),
        ({"prompt": "x", "temperature": math.inf}, "temperature must be a finite number >= 0"),
        ({"prompt": "x", "temperature": "hot"}, "temperature must be a number"),
        ({"prompt": "x", "seed": 1.0}, "seed must be an int"),
        ({"prompt": "x", "seed": "42"}, "seed must be an int"),
        ({"prompt": "x", "seed": -1}, "seed must be in"),
        ({"prompt": "x", "size": "huge"}, "unknown size 'huge'"),
        ({"prompt": "x", "model": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"prompt": "x", "model": "/nonexistent/model.gguf"}, "local model file not found"),
        ({"prompt": "x", "model_repo": "a/b"}, "must be given together"),
        ({"prompt": "x", "eos_string": ""}, "eos_string must be a non-empty str"),
        ({"prompt": "x", "return_logprobs": "yes"}, "return_logprobs must be a bool"),
        ({"prompt": "x", "regex": "a+", "choices": ["a"]}, "at most one of schema, regex, choices"),
        ({"prompt": "x", "schema": {}, "response_format": {"type": "json_object"}}, "at most one"),
    ],
)
def test_bad_input_raises_clear_error(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(st.InvalidRequestError, match=match) as info:
        build_request(**kwargs)
    assert isinstance(info.value, ValueError)  # still catchable as ValueError
    assert isinstance(info.value, st.SteadyTextError)


def test_unknown_size_and_model_are_model_not_found() -> None:
    with pytest.raises(st.ModelNotFoundError):
        build_request("x", size="xl")
    with pytest.raises(st.ModelNotFoundError):
        build_request("x", model="gpt-17")


async def test_remote_model_without_unsafe_mode_is_refused() -> None:
    assert build_request("x", model="openai:gpt-4o-mini").unsafe_mode is False  # the router's gate decides
    with pytest.raises(st.UnsafeModeRequiredError, match="unsafe_mode=True"):
        await st.agenerate("x", model="openai:gpt-4o-mini")


def test_structured_output_is_carried_as_a_constraint() -> None:
    for kwargs, kind in (
        ({"regex": "a+"}, "regex"),
        ({"choices": ["a", "b"]}, "choices"),
        ({"schema": {"type": "object"}}, "json_schema"),
        ({"response_format": {"type": "json_object"}}, "json_schema"),
    ):
        request = build_request("x", **kwargs)
        assert request.constraint is not None and request.constraint.kind == kind


def test_unsafe_mode_env_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEADYTEXT_UNSAFE_MODE", "1")
    assert st.Settings.from_env().unsafe_mode is True  # the client's settings carry it (the router's gate reads it)
    assert build_request("x", model="openai:gpt-4o-mini").unsafe_mode is False  # a request is what the call says


async def test_errors_raise_before_any_work_through_public_api() -> None:
    with pytest.raises(st.InvalidRequestError):
        await st.agenerate("x", max_new_tokens=0)
    with pytest.raises(st.InvalidRequestError):
        st.generate(42)  # type: ignore[call-overload]
    with pytest.raises(st.InvalidRequestError):
        async for _ in st.agenerate_iter("x", temperature=-1):
            pass


def test_seed_at_temperature_zero_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    from steadytext_async import _validate

    _validate._seed_warned.clear()
    with caplog.at_level(logging.WARNING, logger="steadytext_async"):
        build_request("x", seed=123)
        build_request("x", seed=456)
        build_request("x", seed=7, temperature=0.5)
    warnings = [r for r in caplog.records if "has no effect at temperature=0" in r.getMessage()]
    assert len(warnings) == 1


def test_defaults_match_original_api() -> None:
    r = build_request("hi")
    assert r.max_new_tokens == 512
    assert r.eos_string == "[EOS]"
    assert r.sampling.seed == 42
    assert r.sampling.temperature == 0.0
    assert r.logprobs is False
    assert r.stop_string is None
    assert build_request("hi", eos_string="END").stop_string == "END"


def test_first_attribute_and_request_stay_light() -> None:
    """Start-up: `import`, the first `agenerate` attribute and building a request load neither asyncio nor the
    client, engine, cache or worker modules (they load on the first call)."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys, steadytext_async as st; st.agenerate\n"
        "from steadytext_async._validate import build_request; build_request('hi', max_new_tokens=4)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'asyncio' or m.startswith('steadytext_async.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = {"asyncio", "steadytext_async._client", "steadytext_async._engine", "steadytext_async._cache"}
    heavy |= {"steadytext_async._worker.parent.pool", "steadytext_async._router", "steadytext_async._replay"}
    heavy |= {"steadytext_async._config", "steadytext_async._worker.protocol"}  # settings, the wire's dataclasses
    assert not loaded & heavy, sorted(loaded & heavy)


def test_the_request_holds_what_pydantic_validation_would() -> None:
    """build_request checks every value itself and builds the request without validating it again: the stored
    values must be the ones (and of the types) that pydantic's validation stores, also for subclasses and enums."""
    import enum

    from steadytext_async._models import GenerationRequest, SamplingParams

    class Number(enum.IntEnum):
        SEVEN = 7

    class Text(str):
        pass

    class Name(str, enum.Enum):  # noqa: UP042 (str() of this kind of enum is "Name.MINI", not its value)
        MINI = "mini"

    raw: dict[str, Any] = {"prompt": Text("hi"), "max_new_tokens": Number.SEVEN, "eos_string": Text("END")}
    raw["size"] = Name.MINI
    built = build_request(**raw, seed=Number.SEVEN, temperature=1, strict=True)
    sampling = SamplingParams(temperature=1, seed=Number.SEVEN)
    validated = GenerationRequest(
        **raw,
        messages=None,
        sampling=sampling,
        logprobs=False,
        model=None,
        model_repo=None,
        model_filename=None,
        unsafe_mode=False,
        strict=True,
        constraint=None,
        tools=None,
        tool_choice=None,
    )
    assert built == validated and built.model_fields_set == validated.model_fields_set
    for model, other in ((built, validated), (built.sampling, validated.sampling)):
        for name in type(model).model_fields:
            assert type(getattr(model, name)) is type(getattr(other, name)), name
    assert GenerationRequest.model_validate(built.model_dump()) == built
    conv = [
        {"role": Text("user"), "content": Text("hi")},
        {"role": "system", "content": [{"type": "text", "text": "a"}]},
    ]
    built = build_request(messages=conv)
    validated = GenerationRequest.model_validate(built.model_dump())
    assert built == validated == GenerationRequest(messages=conv)  # type: ignore[arg-type]
    assert built.messages is not None and type(built.messages[0].role) is str and type(built.messages[0].content) is str
