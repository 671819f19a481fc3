"""``serve`` speaks tools in OpenAI's wire shape: the official ``openai`` client (whole and streamed) gets the SDK's
calls, and an agent framework (pydantic-ai) runs a two-tool loop against it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import openai
import pytest
from _serve_helpers import SDK_SETTINGS, ServeProcess, serve
from _tools_data import ASK, WEATHER

from steadytext_async._sync import SteadyText

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionAssistantMessageParam, ChatCompletionMessageParam


@pytest.fixture(scope="module")
def sdk() -> Iterator[SteadyText]:
    with SteadyText(**SDK_SETTINGS) as client:
        yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve(tmp_path_factory.mktemp("serve-tools")) as srv:
        yield srv


@pytest.fixture(scope="module")
def oai(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


def test_openai_client_gets_the_sdk_call_whole_and_streamed(oai: openai.OpenAI, sdk: SteadyText) -> None:
    golden = sdk.generate(messages=ASK, tools=[WEATHER], tool_choice="required", max_new_tokens=40)
    assert golden.tool_calls is not None
    response = oai.chat.completions.create(
        model="default", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=40
    )
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    assert [c.model_dump() for c in choice.message.tool_calls] == [c.wire() for c in golden.tool_calls]
    stream = list(
        oai.chat.completions.create(
            model="default", messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=40, stream=True
        )
    )
    deltas = [d for c in stream if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert len(deltas) == 1 and deltas[0].index == 0
    assert deltas[0].id == golden.tool_calls[0].id
    assert deltas[0].function is not None and deltas[0].function.name == "get_weather"
    assert deltas[0].function.arguments == golden.tool_calls[0].function.arguments
    assert not any(c.choices[0].delta.content for c in stream if c.choices)  # the call's markup is not content
    assert stream[-1].choices[0].finish_reason == "tool_calls"
    # the next turn: the call and its result go back
    turns: list[ChatCompletionMessageParam] = [
        *ASK,
        cast("ChatCompletionAssistantMessageParam", choice.message.model_dump(exclude_none=True)),
        {"role": "tool", "tool_call_id": choice.message.tool_calls[0].id, "content": "18 degrees"},
    ]
    answer = oai.chat.completions.create(
        model="default", messages=turns, tools=[WEATHER], tool_choice="none", max_tokens=16
    )
    golden_answer = sdk.generate(messages=turns, tools=[WEATHER], tool_choice="none", max_new_tokens=16)
    assert answer.choices[0].message.content == golden_answer.text and answer.choices[0].message.tool_calls is None


def test_bad_tools_are_400(server: ServeProcess) -> None:
    with server.client(timeout=60) as c:
        r = c.post(
            "/v1/chat/completions",
            json={"messages": ASK, "tools": [WEATHER, WEATHER], "max_tokens": 8},
        )
        assert r.status_code == 400 and "used twice" in r.json()["error"]["message"]
        r = c.post(
            "/v1/chat/completions",
            json={"messages": [*ASK, {"role": "tool", "tool_call_id": "nope", "content": "x"}], "max_tokens": 8},
        )
        assert r.status_code == 400 and "matches no earlier" in r.json()["error"]["message"]


async def test_pydantic_ai_runs_a_two_tool_loop_against_serve(server: ServeProcess) -> None:
    """pydantic-ai with two function tools (tool_choice "auto"), looping until the model answers in text; the whole
    run (calls, tool results, answer) is the same twice. (With a structured output pydantic-ai forces a call on
    every step, and this 135M model keeps calling tools until the request limit.)"""
    from pydantic_ai import Agent, ModelSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.usage import UsageLimits

    capitals = {"France": "Paris", "Japan": "Tokyo"}
    calls: list[tuple[str, str]] = []

    def build(provider: OpenAIProvider) -> Agent[None, str]:
        model = OpenAIChatModel("default", provider=provider)
        agent: Agent[None, str] = Agent(model, system_prompt="Use the tools, then answer in one sentence.")

        @agent.tool_plain
        def capital(country: str) -> str:
            """The capital city of a country."""
            calls.append(("capital", country))
            return capitals.get(country, "unknown")

        @agent.tool_plain
        def multiply(a: int, b: int) -> int:
            """Multiply two integers."""
            calls.append(("multiply", json.dumps([a, b])))
            return a * b

        return agent

    settings = ModelSettings(max_tokens=64, temperature=0.0)
    runs = []
    for _ in range(2):
        calls.clear()
        provider = OpenAIProvider(base_url=server.url + "/v1", api_key="x")
        try:
            result = await build(provider).run(
                "What is the capital of Japan?", model_settings=settings, usage_limits=UsageLimits(request_limit=8)
            )
        finally:
            await provider.client.close()
        assert isinstance(result.output, str) and result.output
        parts = [type(p).__name__ for m in result.all_messages() for p in m.parts]
        runs.append((result.output, list(calls), parts))
    assert runs[0] == runs[1]  # the same loop, byte for byte
    print("pydantic-ai parts:", runs[0][2], "calls:", runs[0][1])
    assert {name for name, _ in runs[0][1]} <= {"capital", "multiply"}
