"""Chat messages: OpenAI's shape in, one canonical form out, bad input refused before any work."""

import json
from typing import Any

import pytest

import steadytext_async as st
from steadytext_async._messages import ChatMessage, TextPart
from steadytext_async._validate import build_request
from steadytext_async._worker.limits import MAX_PROMPT_BYTES

SYSTEM = {"role": "system", "content": "You are terse."}
USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "pass a prompt or messages"),
        ({"prompt": "x", "messages": [USER]}, "either prompt or messages, not both"),
        ({"messages": []}, "must not be empty"),
        ({"messages": "hi"}, "must be a list of messages, got str"),
        ({"messages": USER}, "must be a list of messages, got dict"),
        ({"messages": [{"role": "robot", "content": "x"}]}, r"messages\[0\]\.role must be one of"),
        ({"messages": [{"content": "x"}]}, r"messages\[0\]\.role must be one of"),
        ({"messages": [USER, {"role": "user"}]}, r"messages\[1\] has no content"),
        ({"messages": [{"role": "user", "content": 5}]}, r"messages\[0\]\.content must be a string or a list"),
        ({"messages": [{"role": "user", "content": b"x"}]}, r"must be a string or a list of text parts, got bytes"),
        ({"messages": [{"role": "user", "content": []}]}, "empty list of parts"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            r"content\[0\] has type 'image_url': only text parts",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, r"content\[0\]\.text must be"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]}, "unknown fields: x"),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "not valid Unicode"),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}, "unsupported fields: tool_calls"),
        ({"messages": [{"role": "user", "content": "x", "name": ""}]}, "name must not be empty"),
        ({"messages": ["hi"]}, r"messages\[0\] must be an object"),
        ({"messages": [{"role": "user", "content": "x" * (MAX_PROMPT_BYTES + 1)}]}, "the limit is"),
    ],
)
def test_bad_messages_are_invalid_request_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(st.InvalidRequestError, match=match):
        build_request(**kwargs)


def test_messages_are_made_canonical() -> None:
    request = build_request(
        messages=[
            SYSTEM,
            {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": "q", "name": "ann"},
            {"role": "assistant", "content": "r"},
            ChatMessage(role="user", content="again"),
        ]
    )
    assert request.prompt is None and request.messages is not None
    assert request.messages[1] == ChatMessage(role="developer", content=(TextPart(text="a"), TextPart(text="b")))
    # what a local chat template renders: developer as system, parts joined with a newline
    assert request.chat() == (
        {"role": "system", "content": "You are terse."},
        {"role": "system", "content": "a\nb"},
        {"role": "user", "content": "q", "name": "ann"},
        {"role": "assistant", "content": "r"},
        {"role": "user", "content": "again"},
    )
    # what a remote provider receives: OpenAI's wire shape, parts kept
    assert [m.wire() for m in request.messages][1] == {
        "role": "developer",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    assert build_request("hello").chat() == ({"role": "user", "content": "hello"},)


def test_pydantic_message_objects_are_accepted() -> None:
    """Agent frameworks hand over their own pydantic message models; their dump is the OpenAI shape."""
    from pydantic import BaseModel

    class Msg(BaseModel):
        role: str
        content: str
        name: str | None = None

    request = build_request(messages=[Msg(role="user", content="hi")])
    assert request.messages == (ChatMessage(role="user", content="hi"),)


def test_cache_key_covers_the_canonical_messages() -> None:
    from steadytext_async._cache.key import cache_key

    spec = st.ModelSpec(name="m", path="/m.gguf", sha256="0" * 64, prompt_format="chat")

    def key(**kw: Any) -> str:
        return cache_key(build_request(**kw), spec)

    base = key(messages=[SYSTEM, USER])
    assert base == key(messages=[dict(SYSTEM), dict(USER)])  # equal inputs, equal keys
    assert base != key(messages=[USER])
    assert base != key(messages=[{"role": "developer", "content": "You are terse."}, USER])
    assert base != key(messages=[SYSTEM, {"role": "user", "content": "hi", "name": "x"}])
    assert base != key(messages=[SYSTEM, USER, {"role": "assistant", "content": "hello"}, USER])
    assert base != key(prompt="hi")


async def test_bad_messages_fail_before_the_provider_is_called(mock_default: st.MockProvider) -> None:
    with pytest.raises(st.InvalidRequestError):
        await st.agenerate(messages=[{"role": "robot", "content": "x"}], model="mock:m")
    with pytest.raises(st.InvalidRequestError):
        [p async for p in st.agenerate_iter("x", messages=[USER], model="mock:m")]
    assert mock_default.requests == []


async def test_messages_reach_every_entry_point(mock_default: st.MockProvider) -> None:
    """agenerate, agenerate_iter, generate, generate_iter, the clients and the compat helpers all take messages=."""
    conv = [SYSTEM, USER]
    a = await st.agenerate(messages=conv, model="mock:m", max_new_tokens=3)
    b = "".join([p async for p in st.agenerate_iter(messages=conv, model="mock:m", max_new_tokens=3)])
    c = st.generate(messages=conv, model="mock:m", max_new_tokens=3)
    d = "".join(st.generate_iter(messages=conv, model="mock:m", max_new_tokens=3))
    assert a == b == c == d
    assert a != await st.agenerate("hi", model="mock:m", max_new_tokens=3)
    mock = st.MockProvider(lambda r: json.dumps({"n": len(r.messages or ())}))
    async with st.AsyncSteadyText(providers={"mock": mock}) as client:
        assert (await client.generate(messages=conv, model="mock:m")).text == '{"n": 2}'
        items = [i async for i in client.stream(messages=conv, model="mock:m")]
        assert isinstance(items[-1], st.GenerationResult) and items[-1].text == '{"n": 2}'
        assert items[-1].fingerprint.messages == [
            ChatMessage(role="system", content="You are terse."),
            ChatMessage(role="user", content="hi"),
        ]
        assert items[-1].fingerprint.prompt is None
    with st.SteadyText(providers={"mock": mock}) as sync_client:
        assert sync_client.generate(messages=conv, model="mock:m").text == '{"n": 2}'
    assert all(r.messages is not None and len(r.messages) == 2 for r in mock.requests)


def test_compat_helpers_take_messages(mock_default: st.MockProvider) -> None:
    mock_default.handler = lambda r: '{"a": 1}'
    out = st.generate_json(None, {"type": "object"}, messages=[USER], model="mock:m")
    assert json.loads(out) == {"a": 1}
    assert mock_default.requests[-1].messages == (ChatMessage(role="user", content="hi"),)


def test_remote_chat_endpoints_receive_messages_as_messages() -> None:
    from steadytext_async.providers.openai_compat import build_body
    from steadytext_async.providers.presets import PRESETS, ProviderPreset

    conv = [SYSTEM, {"role": "user", "content": [{"type": "text", "text": "a"}], "name": "ann"}]
    spec = st.ModelSpec(provider="openai", name="gpt-x", prompt_format="chat")
    body = build_body(PRESETS["openai"], spec, build_request(messages=conv), stream=False)
    assert body["messages"] == conv  # never flattened into one prompt
    assert "prompt" not in body
    completions = ProviderPreset(name="plain", base_url="http://127.0.0.1:1/v1", api="completions")
    with pytest.raises(st.InvalidRequestError, match="completions endpoint"):
        build_body(completions, spec, build_request(messages=conv), stream=False)
    assert build_body(completions, spec, build_request("hi"), stream=False)["prompt"] == "hi"
