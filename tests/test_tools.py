"""Tools without a model: bad input is an InvalidRequestError before any work, the canonical form, the one grammar
(checked byte by byte with llguidance), parsing calls, the prompt format, the remote wire shape and serve's mapping."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest
from _tools_data import ADD, WEATHER
from llguidance import LLMatcher

from steadytext_async import ConstraintError, InvalidRequestError
from steadytext_async._cache.key import cache_key
from steadytext_async._models import ModelSpec
from steadytext_async._tools import NamedToolChoice, call_id, parse_calls, plain_chat, tool_constraint
from steadytext_async._validate import build_request
from steadytext_async.structured.grammar import grammar_for
from steadytext_async.structured.validate import _byte_tokenizer

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

USER: list[ChatCompletionRequestMessage] = [{"role": "user", "content": "hi"}]


def _fn(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": function}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tools": [_fn(parameters={"type": "object"})]}, "has no name"),
        ({"tools": [_fn(name="bad name!")]}, "must be a string matching"),
        ({"tools": [WEATHER, WEATHER]}, "used twice"),
        ({"tools": [_fn(name="f", parameters={"type": "object", "properties": 3})]}, "invalid JSON schema"),
        ({"tools": [_fn(name="f", parameters={"type": "frobnicate"})]}, "invalid JSON schema"),
        ({"tools": [_fn(name="f", parameters={"type": "string"})]}, "must describe an object"),
        ({"tools": [_fn(name="f", parameters=[1])]}, "must be a JSON schema object"),
        ({"tools": [{"type": "retrieval"}]}, "type must be 'function'"),
        ({"tools": [_fn(name="f", colour="red")]}, "unsupported fields"),
        ({"tools": "get_weather"}, "tools must be a list"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "add"}}},
            "not one of the tools",
        ),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice must be"),
        ({"tool_choice": "required"}, "needs tools"),
        ({"tools": [WEATHER], "schema": {"type": "object"}}, "cannot be combined"),
        ({"tools": [WEATHER], "eos_string": "END"}, "eos_string cannot be combined with tools"),
    ],
)
def test_bad_tools_are_refused_before_any_work(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        build_request(messages=USER, **kwargs)


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([*USER, {"role": "tool", "tool_call_id": "call_9", "content": "18C"}], "matches no earlier assistant"),
        ([*USER, {"role": "tool", "content": "18C"}], "tool_call_id must be a string"),
        (
            [{"role": "tool", "tool_call_id": "call_1", "content": "x"}, {"role": "assistant", "tool_calls": [CALL]}],
            "matches no earlier",
        ),
        ([{"role": "user", "content": "x", "tool_calls": [CALL]}], "only an assistant message has tool_calls"),
        ([{"role": "assistant", "content": None, "tool_calls": []}], "non-empty list"),
        ([{"role": "assistant", "content": None}], "has no content"),
        ([{"role": "user", "content": "x", "tool_call_id": "call_1"}], "only a tool message"),
        ([{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}], "arguments must be a str"),
    ],
)
def test_bad_tool_messages_are_refused(messages: list[Any], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        build_request(messages=messages, tools=[WEATHER])


def test_tool_turns_are_accepted_and_keyed() -> None:
    turns = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    request = build_request(messages=turns, tools=[WEATHER])
    assert request.tool_choice == "auto"
    assert request.messages is not None and request.messages[1].tool_calls is not None
    assert request.messages[1].wire() == {"role": "assistant", "content": None, "tool_calls": [CALL]}
    spec = ModelSpec(name="m", sha256="0" * 64, prompt_format="chat")
    keys = {
        cache_key(build_request(messages=turns, tools=[WEATHER]), spec),
        cache_key(build_request(messages=turns, tools=[WEATHER, ADD]), spec),
        cache_key(build_request(messages=turns, tools=[WEATHER], tool_choice="required"), spec),
        cache_key(build_request(messages=turns[:1], tools=[WEATHER]), spec),
        cache_key(build_request(messages=turns[:1]), spec),
    }
    assert len(keys) == 5
    # a tool schema given in another key order is the same request
    reordered = json.loads(json.dumps(WEATHER))
    reordered["function"]["parameters"] = dict(reversed(list(reordered["function"]["parameters"].items())))
    assert cache_key(build_request(messages=turns, tools=[reordered]), spec) == cache_key(request, spec)


def test_plain_messages_dump_as_before() -> None:
    request = build_request(messages=USER)
    assert request.messages is not None
    assert request.messages[0].model_dump() == {"role": "user", "content": "hi", "name": None}


def _accepts(grammar: str, text: str) -> bool:
    data = list(text.encode("utf-8"))
    m = LLMatcher(_byte_tokenizer(), grammar, log_level=0)
    return m.try_consume_tokens(data) == len(data) and m.is_accepting()


def test_the_grammar_admits_text_or_one_valid_call() -> None:
    request = build_request(messages=USER, tools=[WEATHER, ADD])
    assert request.tools is not None
    auto = grammar_for(tool_constraint(request.tools, "auto"))  # type: ignore[arg-type]
    required = grammar_for(tool_constraint(request.tools, "required"))  # type: ignore[arg-type]
    named = grammar_for(tool_constraint(request.tools, NamedToolChoice(name="add")))  # type: ignore[arg-type]
    weather = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}\n</tool_call>'
    add = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": -2}}\n</tool_call>'
    assert _accepts(auto, "Hello there.") and _accepts(auto, "")
    assert _accepts(auto, weather) and _accepts(auto, add)
    assert _accepts(required, weather) and not _accepts(required, "Hello")
    assert _accepts(named, add) and not _accepts(named, weather)
    for bad in (
        '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>',
        '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>',  # b is required
        '<tool_call>\n{"name": "add", "arguments": {"a": 1.5, "b": 2}}\n</tool_call>',  # integers
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "P", "unit": "K"}}\n</tool_call>',
        '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n<tool_call>',  # one call
        "<b>bold</b>",  # plain text may not start with "<" (it could be a broken call)
    ):
        assert not _accepts(auto, bad), bad
    assert tool_constraint(request.tools, "none") is None


def test_parse_calls_checks_and_ids_are_deterministic() -> None:
    request = build_request(messages=USER, tools=[WEATHER, ADD])
    assert request.tools is not None
    text = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    calls = parse_calls(request.tools, "auto", text, "key")
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "add" and json.loads(calls[0].function.arguments) == {"a": 1, "b": 2}
    assert calls[0].id == call_id("key", text, 0) == parse_calls(request.tools, "auto", text, "key")[0].id  # type: ignore[index]
    assert calls[0].id != call_id("other", text, 0) and calls[0].id.startswith("call_")
    assert parse_calls(request.tools, "auto", "Hello", "key") is None
    with pytest.raises(ConstraintError, match="requires one"):
        parse_calls(request.tools, "required", "Hello", "key")
    with pytest.raises(ConstraintError, match="incomplete"):
        parse_calls(request.tools, "auto", text[:-3], "key")
    with pytest.raises(ConstraintError, match="does not match"):
        parse_calls(request.tools, "auto", text.replace('"b": 2', '"b": "x"'), "key")


def test_plain_chat_writes_the_documented_format() -> None:
    tools = [WEATHER]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    out = plain_chat(messages, tools, "auto")
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.\n\n# Tools\n")
    assert json.dumps(WEATHER) in out[0]["content"]
    assert out[2]["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert out[3]["content"] == "<tool_response>\n18C\n</tool_response>"
    assert plain_chat(messages[1:2], tools, "none") == messages[1:2]  # "none": the tools are not described
    assert (
        "must call the tool get_weather"
        in plain_chat(messages[1:2], tools, {"type": "function", "function": {"name": "get_weather"}})[0]["content"]
    )


def test_remote_wire_shape_both_ways() -> None:
    from steadytext_async.providers.openai_compat._wire import Parser, build_body
    from steadytext_async.providers.presets import get_preset

    request = build_request(messages=USER, tools=[WEATHER], tool_choice="required")
    body = build_body(get_preset("openai", {}), ModelSpec(provider="openai", name="m"), request, stream=True)
    assert body["tools"] == request.tools_wire() and body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tool_choice"] == "required"
    parser = Parser(request, True, max_bytes_per_token=64)
    pieces = [
        {"index": 0, "id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 0, "function": {"arguments": '"Oslo"}'}},
    ]
    for piece in pieces:
        parser.feed({"choices": [{"index": 0, "delta": {"tool_calls": [piece]}}]}, delta=True)
    parser.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, delta=True)
    done = parser.done()
    assert done.finish_reason == "tool_calls"
    assert done.tool_calls is not None and [c.wire() for c in done.tool_calls] == [
        {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    ]


def test_serve_maps_tools() -> None:
    from steadytext_async.serve._openai import parse_request

    parsed = parse_request("chat", {"messages": USER, "tools": [WEATHER], "tool_choice": "auto"}, allow_remote=False)
    assert parsed.kwargs["tools"] == [WEATHER] and parsed.kwargs["tool_choice"] == "auto"
    with pytest.raises(InvalidRequestError, match="unknown parameters: tools"):
        parse_request("completion", {"prompt": "x", "tools": [WEATHER]}, allow_remote=False)


# A template with its own tool format (the shape of Qwen 2.5's / Hermes'): tools and tool turns rendered natively.
_HERMES = (
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t['function']['name'] }};{% endfor %}</tools>"
    "<|im_end|>\n{% endif %}{% for m in messages %}{% if m['role'] == 'tool' %}<|im_start|>user\n<tool_response>"
    "{{ m['content'] }}</tool_response><|im_end|>\n{% elif m.get('tool_calls') %}<|im_start|>assistant\n"
    "{% for c in m['tool_calls'] %}<tool_call>{{ c['function']['arguments'] | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    "<|im_start|>assistant\n"
)
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n"
)


def test_render_uses_the_template_tool_format_when_it_has_one() -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from steadytext_async._tools import render, template_has_tools

    turns: list[Mapping[str, Any]] = [
        *USER,
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    ]
    assert template_has_tools(_HERMES) and not template_has_tools(_CHATML)
    hermes = Jinja2ChatFormatter(template=_HERMES, eos_token="</s>", bos_token="<s>")
    native = render(hermes, _HERMES, turns, [WEATHER], "auto")
    assert native.startswith("<|im_start|>system\n<tools>get_weather;</tools>")
    assert '<tool_call>{"city": "Paris"}</tool_call>' in native  # arguments decoded, as HF templates take them
    assert "<tool_response>18C</tool_response>" in native
    chatml = Jinja2ChatFormatter(template=_CHATML, eos_token="</s>", bos_token="<s>")
    documented = render(chatml, _CHATML, turns, [WEATHER], "auto")
    assert documented.startswith("<|im_start|>system\n# Tools\n")
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in documented
    # no tools and no tool turns: exactly the plain rendering
    assert render(chatml, _CHATML, USER, None, None) == chatml(messages=USER).prompt


# -- the stream shape: a call is never streamed as markup text ----------------------------------------------------
def _events(*texts: str) -> list[Any]:
    from steadytext_async._models import TokenLogprob
    from steadytext_async.providers.base import ProviderChunk

    tokens = [TokenLogprob(token=t, token_id=i, bytes=list(t.encode()), logprob=-1.0) for i, t in enumerate(texts)]
    return [ProviderChunk(t, [i], [tokens[i]]) for i, t in enumerate(texts)]


def _call(name: str) -> Any:
    from steadytext_async._tools import FunctionCall, ToolCall

    return ToolCall(id="call_1", function=FunctionCall(name=name, arguments="{}"))


@pytest.mark.parametrize(
    ("choice", "texts", "passed", "held"),
    [
        ("auto", ["<tool", "_call>", "{}"], [], ["<tool", "_call>", "{}"]),  # starts like a call: all held
        ("auto", ["", "Hello", " <b>"], ["", "Hello", " <b>"], []),  # plain text: streamed as it comes
        ("required", ["Hi", "!"], [], ["Hi", "!"]),  # a call is forced: everything held
        ("none", ["<tool_call>"], ["<tool_call>"], []),  # no call possible: nothing held
    ],
)
def test_pieces_that_may_be_a_call_are_held_back(
    choice: str, texts: list[str], passed: list[str], held: list[str]
) -> None:
    from steadytext_async._results import CallHold

    request = build_request(None, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice=choice)
    hold = CallHold(request)
    events = _events(*texts)
    assert [e.text for e in events if not hold.take(e)] == passed
    assert [e.text for e in hold.held] == held
    calls = [_call("get_weather")] if held else None
    released = hold.release(calls)
    if not held:
        assert released is None
        return
    assert released is not None
    assert released.text == "".join(held) and released.token_ids == [i for i, t in enumerate(texts) if t in held]
    assert released.tool_calls == calls and released.logprob == -float(len(held))


def test_a_remote_call_without_held_text_still_gets_its_chunk() -> None:
    """A remote provider reports its calls in the final event (no text): the stream shape is the same."""
    from steadytext_async._results import CallHold

    request = build_request(None, messages=[{"role": "user", "content": "hi"}], tools=[WEATHER])
    released = CallHold(request).release([_call("get_weather")])
    assert released is not None and released.text == "" and released.tool_calls == [_call("get_weather")]
    assert CallHold(request).release(None) is None
