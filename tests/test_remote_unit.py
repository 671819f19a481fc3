"""Remote provider unit tests over httpx.MockTransport: request bodies per preset, response mapping, retries."""

from __future__ import annotations

import dataclasses
import email.utils
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from steadytext_async import InvalidRequestError
from steadytext_async._exceptions import (
    RemoteAuthenticationError,
    RemoteBadRequestError,
    RemoteConnectionError,
    RemoteError,
    RemoteNotFoundError,
    RemoteProtocolError,
    RemoteRateLimitError,
    RemoteServerError,
    RemoteStatusError,
    RemoteTimeoutError,
    UnknownProviderError,
)
from steadytext_async._modelref import split_remote_model
from steadytext_async._models import GenerationRequest, ModelSpec
from steadytext_async._validate import build_request
from steadytext_async.providers.base import ProviderChunk, ProviderDone
from steadytext_async.providers.openai_compat import OpenAICompatProvider, _retry, build_body
from steadytext_async.providers.presets import (
    PRESETS,
    RemoteOptions,
    get_preset,
    known_providers,
    register_provider,
    unregister_provider,
)

Handler = Callable[[httpx.Request], httpx.Response]
SPEC = ModelSpec(provider="x", name="some-model")


def sse(*payloads: Any, done: bool = True) -> httpx.Response:
    text = "".join(f"data: {p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads)
    if done:
        text += "data: [DONE]\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())


def delta(text: str | None = None, finish: str | None = None, **choice: Any) -> dict[str, Any]:
    d = {} if text is None else {"content": text}
    return {"choices": [{"index": 0, "delta": d, "finish_reason": finish, **choice}]}


def provider(
    handler: Handler, name: str = "openai", *, key: str | None = "sk-unit", **changes: Any
) -> OpenAICompatProvider:
    preset = dataclasses.replace(PRESETS[name], **changes)
    return OpenAICompatProvider(preset, api_key=key, transport=httpx.MockTransport(handler))


async def run(p: OpenAICompatProvider, request: GenerationRequest, *, sse: bool | None = None) -> list[Any]:
    try:
        return [event async for event in p.stream(SPEC, request, sse=sse)]
    finally:
        await p.aclose()


def req(**kw: Any) -> GenerationRequest:
    return build_request("Say hi", **kw)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the waits between attempts instead of sleeping."""
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(_retry, "_sleep", fake_sleep)
    return recorded


# -- request bodies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
async def test_request_body_per_preset(name: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sse(delta("Hi"), delta(finish="stop"))

    preset = PRESETS[name]
    logprobs = preset.logprobs
    events = await run(
        provider(handler, name),
        req(max_new_tokens=7, seed=3, temperature=0.5, eos_string="\n\n", return_logprobs=False),
    )
    assert [type(e) for e in events] == [ProviderChunk, ProviderDone]
    (request,) = seen
    assert str(request.url) == preset.base_url + "/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-unit"
    body = json.loads(request.content)
    expected: dict[str, Any] = {
        "model": "some-model",
        "messages": [{"role": "user", "content": "Say hi"}],
        preset.max_tokens_field: 7,
        "temperature": 0.5,
        preset.seed_field: 3,
        "stop": ["\n\n"],
        "stream": True,
    }
    if preset.stream_usage:
        expected["stream_options"] = {"include_usage": True}
    assert body == expected
    assert logprobs == (name not in ("groq", "mistral"))


def test_body_fields_of_note() -> None:
    assert build_body(PRESETS["openai"], SPEC, req(max_new_tokens=5), stream=False)["max_completion_tokens"] == 5
    assert build_body(PRESETS["mistral"], SPEC, req(seed=9), stream=False)["random_seed"] == 9
    plain = build_body(PRESETS["vllm"], SPEC, req(return_logprobs=True), stream=False)
    assert plain["logprobs"] is True and plain["top_logprobs"] == 5
    assert "stop" not in plain and "stream" not in plain and plain["max_tokens"] == 512
    legacy = build_body(
        dataclasses.replace(PRESETS["vllm"], api="completions"), SPEC, req(return_logprobs=True), stream=True
    )
    assert legacy["prompt"] == "Say hi" and "messages" not in legacy and legacy["logprobs"] == 5


def test_constraints_translate_per_preset() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    openai = build_body(PRESETS["openai"], SPEC, req(schema=schema), stream=False)
    assert openai["response_format"]["type"] == "json_schema"
    assert openai["response_format"]["json_schema"]["strict"] is True
    vllm = build_body(PRESETS["vllm"], SPEC, req(regex="[0-9]+"), stream=False)
    assert vllm["guided_regex"] == "[0-9]+"
    choices = build_body(PRESETS["vllm"], SPEC, req(choices=["yes", "no"]), stream=False)
    assert choices["guided_choice"] == ["yes", "no"]
    generic = build_body(PRESETS["groq"], SPEC, req(schema=schema), stream=False)
    assert generic["response_format"]["type"] == "json_schema"
    with pytest.raises(InvalidRequestError, match="regex"):
        build_body(PRESETS["openai"], SPEC, req(regex="[0-9]+"), stream=False)


async def test_local_presets_send_no_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})

    await run(provider(handler, "ollama", key=None), req(), sse=False)
    assert "authorization" not in seen[0].headers
    assert str(seen[0].url) == "http://localhost:11434/v1/chat/completions"


# -- responses -------------------------------------------------------------------------------------------------


async def test_non_streaming_chat_with_logprobs() -> None:
    content = [
        {"token": "Hé", "logprob": -0.5, "bytes": [72, 195, 169], "top_logprobs": [{"token": "Hé", "logprob": -0.5}]},
        {"token": "!", "logprob": -1.25, "bytes": None, "top_logprobs": []},
    ]
    doc = {
        "id": "c1",
        "system_fingerprint": "fp_1",
        "choices": [{"message": {"content": "Hé!"}, "logprobs": {"content": content}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
    }
    p = provider(lambda r: httpx.Response(200, json=doc, headers={"x-request-id": "req-9"}), "vllm")
    chunk, done = await run(p, req(return_logprobs=True), sse=False)
    assert chunk.text == "Hé!"
    assert [(t.token, t.bytes, t.logprob, t.token_id) for t in chunk.tokens] == [
        ("Hé", [72, 195, 169], -0.5, -1),
        ("!", [33], -1.25, -1),
    ]
    assert [(t.token, t.bytes, t.logprob) for t in chunk.tokens[0].top_logprobs] == [("Hé", [72, 195, 169], -0.5)]
    assert done.finish_reason == "length"
    assert (done.prompt_tokens, done.completion_tokens) == (4, 2)
    assert p.capabilities.deterministic is False and "remote" not in done.info
    assert done.info["request_id"] == "req-9" and done.info["remote_system_fingerprint"] == "fp_1"


async def test_streaming_legacy_completions_with_logprobs() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/completions"
        lp1 = {
            "tokens": [" a"],
            "token_logprobs": [-0.1],
            "top_logprobs": [{" a": -0.1, " b": -2.0}],
            "text_offset": [0],
        }
        lp2 = {"tokens": [" c"], "token_logprobs": [-0.3], "top_logprobs": [{" c": -0.3}], "text_offset": [2]}
        return sse(
            {"choices": [{"text": " a", "logprobs": lp1, "finish_reason": None}]},
            {"choices": [{"text": " c", "logprobs": lp2, "finish_reason": None}]},
            {"choices": [{"text": "", "logprobs": None, "finish_reason": "stop"}]},
        )

    events = await run(provider(handler, "vllm", api="completions"), req(return_logprobs=True))
    *chunks, done = events
    assert "".join(c.text for c in chunks) == " a c"
    assert [t.token for c in chunks for t in c.tokens] == [" a", " c"]
    assert [(t.token, t.logprob) for t in chunks[0].tokens[0].top_logprobs] == [(" a", -0.1), (" b", -2.0)]
    assert done.finish_reason == "eos"


@pytest.mark.parametrize(
    ("finish", "extra", "eos_string", "expected"),
    [
        ("stop", {}, "[EOS]", "eos"),
        ("stop", {}, "END", "stop_string"),
        ("stop", {"stop_reason": "END"}, "END", "stop_string"),  # vLLM says which stop fired
        ("stop", {"stop_reason": None}, "END", "eos"),
        ("length", {}, "END", "length"),
    ],
)
async def test_finish_reason_mapping(finish: str, extra: dict[str, Any], eos_string: str, expected: str) -> None:
    events = await run(provider(lambda r: sse(delta("x"), delta(finish=finish, **extra))), req(eos_string=eos_string))
    assert events[-1].finish_reason == expected


async def test_unsupported_finish_reason_is_an_error() -> None:
    with pytest.raises(RemoteError, match="content_filter"):
        await run(provider(lambda r: sse(delta("x"), delta(finish="content_filter"))), req())


async def test_stream_cut_before_done_without_finish_reason_is_an_error() -> None:
    with pytest.raises(RemoteProtocolError, match="without a finish_reason"):
        await run(provider(lambda r: sse(delta("partial"), done=False)), req())


async def test_stream_ending_with_done_but_no_finish_reason_is_complete() -> None:
    """Like the official openai client: ``data: [DONE]`` closes the stream even when no chunk had a finish_reason."""
    events = await run(provider(lambda r: sse(delta("whole"), done=True)), req())
    assert [e.text for e in events if isinstance(e, ProviderChunk)] == ["whole"]
    assert isinstance(events[-1], ProviderDone) and events[-1].finish_reason == "eos"


async def test_document_without_finish_reason_is_still_an_error() -> None:
    body = {"choices": [{"message": {"content": "x"}}]}
    with pytest.raises(RemoteProtocolError, match="without a finish_reason"):
        await run(provider(lambda r: httpx.Response(200, json=body)), req(), sse=False)


async def test_malformed_stream_event() -> None:
    with pytest.raises(RemoteProtocolError, match="malformed stream event") as info:
        await run(provider(lambda r: sse(delta("ok"), "{not json")), req())
    assert info.value.attempts == 1


async def test_error_event_inside_stream() -> None:
    with pytest.raises(RemoteError, match="overloaded"):
        await run(provider(lambda r: sse(delta("ok"), {"error": {"message": "overloaded"}})), req())


async def test_missing_logprobs_are_an_error() -> None:
    with pytest.raises(RemoteProtocolError, match="logprobs"):
        await run(provider(lambda r: sse(delta("x"), delta(finish="stop"))), req(return_logprobs=True))


async def test_logprobs_refused_when_preset_has_none() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return sse()

    with pytest.raises(InvalidRequestError, match="logprobs"):
        await run(provider(handler, "groq"), req(return_logprobs=True))
    assert calls == []


async def test_json_answer_to_a_stream_request_is_accepted() -> None:
    doc = {"choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}]}
    chunk, done = await run(provider(lambda r: httpx.Response(200, json=doc)), req(), sse=True)
    assert chunk.text == "whole" and done.finish_reason == "eos"


# -- errors and retries ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, RemoteBadRequestError), (401, RemoteAuthenticationError), (403, RemoteAuthenticationError),
     (404, RemoteNotFoundError), (422, RemoteBadRequestError)],
)  # fmt: skip
async def test_client_errors_are_not_retried(status: int, cls: type[RemoteStatusError], sleeps: list[float]) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        body = {"error": {"message": "nope", "type": "invalid_request_error"}}
        return httpx.Response(status, json=body, headers={"x-request-id": "r1"})

    with pytest.raises(cls) as info:
        await run(provider(handler), req())
    err = info.value
    assert (err.status_code, err.request_id, err.attempts, len(calls), sleeps) == (status, "r1", 1, 1, [])
    assert str(err) == f"openai: HTTP {status}: nope"


async def test_429_and_5xx_retried_honouring_retry_after(sleeps: list[float]) -> None:
    answers = [
        httpx.Response(429, json={"error": {"message": "slow"}}, headers={"retry-after": "2"}),
        httpx.Response(503, text="busy", headers={"retry-after-ms": "1500"}),
        sse(delta("ok"), delta(finish="stop")),
    ]
    events = await run(provider(lambda r: answers.pop(0)), req())
    assert sleeps == [2.0, 1.5]
    assert events[0].text == "ok" and events[-1].info["attempts"] == 3


async def test_retry_after_http_date(sleeps: list[float]) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    answers = [httpx.Response(429, headers={"retry-after": when}), sse(delta("ok"), delta(finish="stop"))]
    await run(provider(lambda r: answers.pop(0)), req())
    assert len(sleeps) == 1 and 25 < sleeps[0] <= 30


async def test_gives_up_after_max_attempts_with_a_clear_error(sleeps: list[float]) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(500, json={"error": {"message": "boom"}})

    with pytest.raises(RemoteServerError) as info:
        await run(provider(handler, options=RemoteOptions(max_attempts=4, backoff=0.25)), req())
    assert len(calls) == 4 and info.value.attempts == 4 and len(sleeps) == 3
    assert all(0 < s <= 8 for s in sleeps)
    assert str(info.value) == "openai: HTTP 500: boom (gave up after 4 attempts)"


async def test_retry_after_beyond_limit_fails_at_once(sleeps: list[float]) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429, headers={"retry-after": "3600"})

    with pytest.raises(RemoteRateLimitError, match=r"Retry-After 3600s\) \(gave up after 1 attempt\)") as info:
        await run(provider(handler), req())
    assert (len(calls), sleeps, info.value.retry_after) == (1, [], 3600.0)


async def test_retry_wait_past_deadline_fails_at_once(sleeps: list[float]) -> None:
    answers = [httpx.Response(429, headers={"retry-after": "20"}), sse(delta("ok"), delta(finish="stop"))]
    with pytest.raises(RemoteRateLimitError):
        await run(provider(lambda r: answers.pop(0), options=RemoteOptions(deadline=10)), req())
    assert sleeps == []


@pytest.mark.parametrize(
    ("exc", "cls"),
    [(httpx.ConnectError("refused"), RemoteConnectionError), (httpx.ReadError("reset"), RemoteConnectionError),
     (httpx.ReadTimeout("slow"), RemoteTimeoutError), (httpx.ConnectTimeout("slow"), RemoteTimeoutError)],
)  # fmt: skip
async def test_transport_errors_retried_then_typed(exc: Exception, cls: type[Exception], sleeps: list[float]) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise exc

    with pytest.raises(cls, match="gave up after 3 attempts") as info:
        await run(provider(handler), req())
    assert len(calls) == 3 and len(sleeps) == 2 and type(info.value) is cls


async def test_error_body_echoing_the_key_is_redacted() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": f"bad key {request.headers['authorization']}"}})

    p = provider(handler, key="sk-SENTINEL-123")
    assert "SENTINEL" not in repr(p)
    with pytest.raises(RemoteAuthenticationError) as info:
        await run(p, req())
    assert "SENTINEL" not in str(info.value) and "SENTINEL" not in info.value.body
    assert "Bearer ***" in str(info.value)


# -- presets ---------------------------------------------------------------------------------------------------


def test_presets_cover_the_issue() -> None:
    expected = {"openai", "openrouter", "groq", "together", "deepseek", "mistral", "fireworks", "cerebras"}
    assert expected | {"ollama", "vllm", "lmstudio", "llamacpp"} == set(PRESETS)
    for name in expected:
        assert PRESETS[name].api_key_env and PRESETS[name].base_url.startswith("https://")
    for name in ("ollama", "vllm", "lmstudio", "llamacpp"):
        assert PRESETS[name].api_key_env is None and PRESETS[name].base_url.startswith("http://localhost:")


def test_register_provider() -> None:
    preset = register_provider("my-llm", base_url="http://127.0.0.1:9/v1/", api_key_env="MY_LLM_KEY", api="completions")
    try:
        assert preset.base_url == "http://127.0.0.1:9/v1" and "my-llm" in known_providers()
        assert get_preset("my-llm", {}) == preset
        assert get_preset("my-llm", {"STEADYTEXT_MY_LLM_BASE_URL": "http://127.0.0.1:10/v2/"}).base_url == (
            "http://127.0.0.1:10/v2"
        )
        with pytest.raises(InvalidRequestError, match="already exists"):
            register_provider("my-llm", base_url="http://x")
        register_provider("my-llm", base_url="http://127.0.0.1:11", replace=True)
    finally:
        unregister_provider("my-llm")
    assert "my-llm" not in known_providers()
    for bad in ("A", "x", "has:colon", "a/b", ""):
        with pytest.raises(InvalidRequestError):
            register_provider(bad, base_url="http://x")
    with pytest.raises(InvalidRequestError, match="base_url"):
        register_provider("ok-name", base_url="ftp://x")
    with pytest.raises(InvalidRequestError):
        RemoteOptions(max_attempts=0)


def test_env_overrides_builtin_base_url() -> None:
    assert get_preset("openai", {"STEADYTEXT_OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}).base_url == (
        "http://127.0.0.1:1/v1"
    )
    with pytest.raises(UnknownProviderError, match="known providers: cerebras, deepseek"):
        get_preset("nope", {})


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("openrouter:meta-llama/llama-3-8b", ("openrouter", "meta-llama/llama-3-8b")),
        ("ollama:llama3:8b", ("ollama", "llama3:8b")),
        ("C:\\models\\m.gguf", None),
        ("models:x/m.gguf", None),
        ("gemma-3-270m", None),
        ("Upper:x", None),
    ],
)
def test_split_remote_model(model: str, expected: tuple[str, str] | None) -> None:
    assert split_remote_model(model) == expected
