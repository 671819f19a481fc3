"""Tools on the embedded models: every call parses and validates (a Hypothesis fuzz of tool schemas and budgets),
the same bytes stream vs whole, cache on/off, batched or not, and the example agent's transcript is stable."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _serve_helpers import SDK_SETTINGS
from _structured_runner import Runner, shared_runner
from _tools_data import ADD, ASK, WEATHER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadytext_async import AsyncSteadyText, ConstraintError, GenerationResult
from steadytext_async._sync import SteadyText
from steadytext_async._tools import parse_calls, tool_constraint, tools_prompt
from steadytext_async._validate import build_request
from steadytext_async.structured import check_output, normalize

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionToolParam

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sdk() -> Iterator[SteadyText]:
    with SteadyText(**SDK_SETTINGS) as client:
        yield client


def _check(result: GenerationResult, tools: list[ChatCompletionToolParam]) -> None:
    """The call is in OpenAI's shape and its arguments validate against the named tool's schema."""
    assert result.finish_reason == "tool_calls" and result.tool_calls is not None
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for call in result.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        constraint = normalize(schema=by_name[call.function.name])
        assert constraint is not None
        check_output(constraint, call.function.arguments)


def test_required_and_named_calls_validate(sdk: SteadyText) -> None:
    tools = [WEATHER, ADD]
    required = sdk.generate(messages=ASK, tools=tools, tool_choice="required", max_new_tokens=48)
    _check(required, tools)
    assert required.text.startswith("<tool_call>\n{") and required.text.endswith("}\n</tool_call>")
    named = sdk.generate(
        messages=ASK, tools=tools, tool_choice={"type": "function", "function": {"name": "add"}}, max_new_tokens=48
    )
    _check(named, tools)
    assert named.tool_calls is not None and named.tool_calls[0].function.name == "add"
    fp = required.fingerprint
    assert fp.tools is not None and [t.function.name for t in fp.tools] == ["get_weather", "add"]
    assert fp.tool_choice == "required" and fp.inputs_sha256 is not None
    # "none": plain text, the tools unused
    none = sdk.generate(messages=ASK, tools=tools, tool_choice="none", max_new_tokens=16)
    assert none.tool_calls is None and none.finish_reason != "tool_calls"


def test_a_tight_budget_still_gives_a_valid_call(sdk: SteadyText) -> None:
    # the shortest call here is about 30 tokens on SmolLM2 (the markup alone is 12): 34 leaves little room to spare
    result = sdk.generate(messages=ASK, tools=[WEATHER], tool_choice="required", max_new_tokens=34)
    _check(result, [WEATHER])
    assert result.usage.completion_tokens <= 34
    # below the shortest call nothing valid fits: a ConstraintError, never a malformed call
    with pytest.raises(ConstraintError, match=r"ran out|incomplete tool call"):
        sdk.generate(messages=ASK, tools=[WEATHER], tool_choice="required", max_new_tokens=8)


def test_auto_never_starts_a_call_it_cannot_finish(sdk: SteadyText) -> None:
    """Regression: under ``auto`` the model began a call (``<``) with fewer tokens left than the shortest call, and
    ran out (ConstraintError). An empty plan (complete output) now counts as near the budget: the token must fit."""
    call = sdk.generate(messages=ASK, tools=[WEATHER], tool_choice="required", max_new_tokens=40)
    assert call.tool_calls is not None
    turns = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.tool_calls[0].wire()]},
        {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "18 degrees, sunny"},
    ]
    roomy = sdk.generate(messages=turns, tools=[WEATHER], max_new_tokens=64)
    assert roomy.tool_calls is not None  # with room, this model calls again here...
    tight = sdk.generate(messages=turns, tools=[WEATHER], max_new_tokens=24)
    assert tight.tool_calls is None and not tight.text.startswith("<")  # ...without, it does not start a call
    assert tight.finish_reason == "constraint_forced"


def test_stream_whole_and_cache_give_the_same_bytes(tmp_path: Path) -> None:
    async def run() -> list[Any]:
        out: list[Any] = []
        for cache in (False, True):
            env: dict[str, Any] = {"cache_disabled": not cache, "cache_dir": tmp_path / "cache"}
            async with AsyncSteadyText(**SDK_SETTINGS, **env) as client:
                kw: Any = {"messages": ASK, "tools": [WEATHER, ADD], "tool_choice": "required", "max_new_tokens": 40}
                whole = await client.generate(**kw)
                pieces = [item async for item in client.stream(**kw)]
                again = await client.generate(**kw)
                out.append((whole, pieces, again))
        return out

    runs = asyncio.run(run())
    results = []
    for whole, pieces, again in runs:
        final = pieces[-1]
        assert isinstance(final, GenerationResult)
        assert "".join(p.text for p in pieces[:-1]) == whole.text == final.text == again.text
        # the call is one chunk carrying the calls (held back, never streamed as markup), cached or not
        assert len(pieces) == 2 and pieces[0].tool_calls == final.tool_calls and final.tool_calls
        results += [whole, final, again]
    first = results[0]
    for other in results[1:]:
        assert other.tool_calls == first.tool_calls and other.token_ids == first.token_ids
        assert other.fingerprint.inputs_sha256 == first.fingerprint.inputs_sha256
    assert any(r.cached for r in results)  # the cache answered at least once, with the same calls


def test_batched_calls_match_one_at_a_time(sdk: SteadyText) -> None:
    asks = ["Weather in Oslo?", "Add 2 and 40.", "Weather in Lima?"]

    async def together() -> list[GenerationResult]:
        async with AsyncSteadyText(workers=1, threads=2, cache_disabled=True) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.generate(
                            messages=[{"role": "user", "content": a}],
                            tools=[WEATHER, ADD],
                            tool_choice="required",
                            max_new_tokens=40,
                        )
                        for a in asks
                    )
                )
            )

    batched = asyncio.run(together())
    for ask, result in zip(asks, batched, strict=True):
        alone = sdk.generate(
            messages=[{"role": "user", "content": ask}], tools=[WEATHER, ADD], tool_choice="required", max_new_tokens=40
        )
        assert (result.text, result.tool_calls) == (alone.text, alone.tool_calls)
        _check(result, [WEATHER, ADD])


def test_a_tool_result_turn_is_rendered_and_answered(sdk: SteadyText) -> None:
    call = sdk.generate(messages=ASK, tools=[WEATHER], tool_choice="required", max_new_tokens=40)
    assert call.tool_calls is not None
    turns = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [c.wire() for c in call.tool_calls]},
        {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "18 degrees, sunny"},
    ]
    answer = sdk.generate(messages=turns, tools=[WEATHER], tool_choice="none", max_new_tokens=24)
    assert answer.text and answer.tool_calls is None
    # the tool result decides the answer
    other = [*turns[:2], {**turns[2], "content": "-40 degrees, blizzard"}]
    assert sdk.generate(messages=other, tools=[WEATHER], tool_choice="none", max_new_tokens=24).text != answer.text


def test_the_agent_example_transcript_is_the_same_bytes() -> None:
    """In a fresh process (the example as users run it) and on the session's warm default client."""
    import steadytext_async
    from examples.agent import QUESTION, agent, render

    fresh = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent.py")],
        capture_output=True,
        timeout=600,
        check=True,
        cwd=ROOT,
        env={**os.environ, "STEADYTEXT_DISABLE_CACHE": "1"},
    ).stdout
    warm = render(asyncio.run(agent(steadytext_async.default_client(), QUESTION))).encode()
    runs = [fresh, warm]
    assert runs[0] == runs[1]
    lines = [json.loads(line) for line in runs[0].decode().splitlines()]
    assert lines[-1]["role"] == "assistant" and lines[-1]["content"]
    calls = [c for m in lines for c in m.get("tool_calls") or ()]
    results = [m for m in lines if m["role"] == "tool"]
    assert calls and len(results) == len(calls)
    assert {r["tool_call_id"] for r in results} == {c["id"] for c in calls}


# ---- the fuzz: tool schemas x token budgets, on the in-process runner --------------------------------------------

_LEAVES: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [
        {"type": "string", "maxLength": 12},
        {"type": "integer", "minimum": -50, "maximum": 500},
        {"type": "number"},
        {"type": "boolean"},
        {"enum": ["red", "green", "blue"]},
        {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
        {"type": "string", "pattern": "^[a-z]{2,6}$"},
    ]
)


def _objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.lists(st.sampled_from(["city", "count", "mode", "tags", "flag", "note", "x", "y"]), unique=True)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        keys = draw(names.filter(lambda k: 1 <= len(k) <= 4))
        props = {k: draw(children) for k in keys}
        required = [k for k in keys if draw(st.booleans())]
        return {"type": "object", "properties": props, "required": required}

    return build()


_SCHEMAS: st.SearchStrategy[dict[str, Any]] = st.recursive(_LEAVES, lambda inner: _objects(inner), max_leaves=6).filter(
    lambda s: s.get("type") == "object"
)


@st.composite
def _tools(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 3))
    return [
        {"type": "function", "function": {"name": f"tool_{i}", "parameters": draw(_SCHEMAS | _objects(_LEAVES))}}
        for i in range(n)
    ]


def _fuzz_case(runner: Runner, tools: list[dict[str, Any]], choice: Any, extra: int, seed: int) -> None:
    request = build_request(messages=ASK, tools=tools, tool_choice=choice)
    assert request.tools is not None and request.tool_choice is not None
    constraint = tool_constraint(request.tools, request.tool_choice)
    assert constraint is not None
    shortest = runner.factory.shortest(constraint)
    assert shortest is not None
    budget = len(shortest) + extra
    prompt = tools_prompt(request.tools_wire() or [], request.tool_choice_wire()) + "\n\nUser: do it.\nAssistant: "
    out = runner.generate(prompt, constraint, budget, temperature=0.8, seed=seed)
    assert len(out.token_ids) <= budget
    calls = parse_calls(request.tools, request.tool_choice, out.text, "fuzz")  # raises unless valid
    assert calls is not None and len(calls) == 1
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    schema = normalize(schema=by_name[calls[0].function.name])
    assert schema is not None
    check_output(schema, calls[0].function.arguments)


_CHOICES = st.sampled_from(["required", "named"])


def _choice(tools: list[dict[str, Any]], kind: str, pick: int) -> Any:
    if kind == "required":
        return "required"
    return {"type": "function", "function": {"name": tools[pick % len(tools)]["function"]["name"]}}


_FUZZ = {"deadline": None, "derandomize": True, "database": None}
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]


@settings(max_examples=4, suppress_health_check=_HEALTH, **_FUZZ)  # type: ignore[arg-type]  # 1,000 in the slow tier
@given(tools=_tools(), kind=_CHOICES, pick=st.integers(0, 2), extra=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_fuzzed_tool_calls_always_validate(
    tools: list[dict[str, Any]], kind: str, pick: int, extra: int, seed: int
) -> None:
    _fuzz_case(shared_runner(), tools, _choice(tools, kind, pick), extra, seed)


@pytest.mark.slow
@pytest.mark.timeout(7200)  # the whole run: about 3 s per case on 2 quiet cores
@settings(max_examples=1000, suppress_health_check=_HEALTH, **_FUZZ)  # type: ignore[arg-type]
@given(tools=_tools(), kind=_CHOICES, pick=st.integers(0, 2), extra=st.integers(0, 64), seed=st.integers(0, 2**32))
def test_fuzzed_tool_calls_always_validate_1000(
    tools: list[dict[str, Any]], kind: str, pick: int, extra: int, seed: int
) -> None:
    _fuzz_case(shared_runner(), tools, _choice(tools, kind, pick), extra, seed)
