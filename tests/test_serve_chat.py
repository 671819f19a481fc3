"""``serve`` speaks chat as the ecosystem does: whole conversations from the official ``openai`` client and from an
agent framework (pydantic-ai), the same bytes as the SDK for the same messages, streamed and whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from _serve_helpers import ServeProcess, same_fingerprint, serve

from steadytext_async._sync import SteadyText

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

CONVERSATION: list[Any] = [
    {"role": "system", "content": "You are a geography teacher. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And the capital of Italy?"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve(tmp_path_factory.mktemp("serve-chat")) as srv:
        yield srv


@pytest.fixture(scope="module")
def oai(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_system_prompt_and_history_match_the_sdk(oai: openai.OpenAI, sdk: SteadyText) -> None:
    golden = sdk.generate(messages=CONVERSATION, max_new_tokens=24)
    assert golden.finish_reason in ("eos", "length") and golden.text
    response = oai.chat.completions.create(model="default", messages=CONVERSATION, max_tokens=24)
    assert response.choices[0].message.content == golden.text
    assert response.choices[0].message.role == "assistant"
    ext = response.model_extra["steadytext"]  # type: ignore[index]
    assert ext["token_ids"] == golden.token_ids
    assert same_fingerprint(ext["fingerprint"], golden.fingerprint.model_dump(mode="json"))
    recorded = [{k: v for k, v in m.items() if v is not None} for m in ext["fingerprint"]["messages"]]
    assert recorded == CONVERSATION and ext["fingerprint"]["prompt"] is None
    # the history decides the answer: without the assistant turn the bytes differ
    shorter = oai.chat.completions.create(model="default", messages=CONVERSATION[:2], max_tokens=24)
    assert shorter.choices[0].message.content == sdk.generate(messages=CONVERSATION[:2], max_new_tokens=24).text
    assert shorter.choices[0].message.content != golden.text


def test_streamed_conversation_matches_the_sdk(oai: openai.OpenAI, sdk: SteadyText) -> None:
    golden = sdk.generate(messages=CONVERSATION, max_new_tokens=24)
    chunks = list(
        oai.chat.completions.create(
            model="default",
            messages=CONVERSATION,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == golden.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == golden.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == golden.usage.prompt_tokens


def test_developer_role_and_text_parts(oai: openai.OpenAI, sdk: SteadyText) -> None:
    messages: list[Any] = [
        {"role": "developer", "content": "Answer with one word."},
        {"role": "user", "content": [{"type": "text", "text": "Name a colour"}, {"type": "text", "text": "of grass."}]},
    ]
    golden = sdk.generate(messages=messages, max_new_tokens=8)
    response = oai.chat.completions.create(model="default", messages=messages, max_tokens=8)
    assert response.choices[0].message.content == golden.text


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "must not be empty"),
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}], "only text parts"),
        ([{"role": "user", "content": 7}], "must be a string or a list of text parts"),
        ("hello", "messages must be a list"),
    ],
)
def test_bad_conversations_are_400(server: ServeProcess, messages: Any, match: str) -> None:
    with server.client(timeout=60) as c:
        response = c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 4})
    assert response.status_code == 400, response.text
    assert match in response.json()["error"]["message"]


def test_a_base_model_refuses_messages(server: ServeProcess) -> None:
    with server.client(timeout=60) as c:
        response = c.post(
            "/v1/chat/completions",
            json={"model": "gemma-3-270m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
    assert response.status_code == 400, response.text
    assert "raw prompts" in response.json()["error"]["message"]


async def test_pydantic_ai_agent_against_serve(server: ServeProcess, sdk: SteadyText) -> None:
    """An agent framework's OpenAI-compatible client (pydantic-ai), pointed at serve, gets the SDK's bytes."""
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    system = "You are a geography teacher. Answer in one short sentence."
    provider = OpenAIProvider(base_url=server.url + "/v1", api_key="x")
    agent = Agent(OpenAIChatModel("default", provider=provider), system_prompt=system)
    settings: Any = {"max_tokens": 24, "temperature": 0.0}
    turn1 = [{"role": "system", "content": system}, {"role": "user", "content": "What is the capital of France?"}]
    try:
        first = await agent.run("What is the capital of France?", model_settings=settings)
        golden = sdk.generate(messages=turn1, max_new_tokens=24)
        assert first.output == golden.text
        # a second turn sends the history back
        second = await agent.run("And of Italy?", message_history=first.all_messages(), model_settings=settings)
        turn2 = [*turn1, {"role": "assistant", "content": golden.text}, {"role": "user", "content": "And of Italy?"}]
        assert second.output == sdk.generate(messages=turn2, max_new_tokens=24).text
    finally:
        await provider.client.close()
