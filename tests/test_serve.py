"""``steadytext-async serve``: the official openai client, byte-identity with the SDK, SSE, errors, auth, the unsafe
gate, client disconnects, graceful shutdown and /metrics. Every server runs on 127.0.0.1 (port 0) or a unix socket."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _remote_servers import ScriptedServer, instant
from _serve_helpers import ServeProcess, metric, same_fingerprint, serve, sse_events

from steadytext_async import GenerationResult
from steadytext_async._sync import SteadyText

PROMPT = "The three primary colors are"
CHOICES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with serve(tmp_path_factory.mktemp("serve")) as srv:
        yield srv


@pytest.fixture(scope="module")
def oai(server: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _check_same(body_ext: dict[str, Any], result: GenerationResult) -> None:
    assert body_ext["token_ids"] == result.token_ids
    assert body_ext["finish_reason"] == result.finish_reason
    assert same_fingerprint(body_ext["fingerprint"], result.fingerprint.model_dump(mode="json"))


def test_openai_client_completion_matches_sdk(oai: openai.OpenAI, sdk: SteadyText) -> None:
    golden = sdk.generate(PROMPT, max_new_tokens=12)
    response = oai.completions.create(model="default", prompt=PROMPT, max_tokens=12)
    assert response.choices[0].text == golden.text
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == golden.usage.completion_tokens
    _check_same(response.model_extra["steadytext"], golden)  # type: ignore[index]


def test_openai_client_chat_with_logprobs_matches_sdk(oai: openai.OpenAI, sdk: SteadyText) -> None:
    golden = sdk.generate(PROMPT, max_new_tokens=6, return_logprobs=True)
    response = oai.chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
    )
    choice = response.choices[0]
    assert choice.message.content == golden.text
    assert golden.logprobs is not None and choice.logprobs is not None and choice.logprobs.content is not None
    got = [(t.token, t.logprob, [a.logprob for a in t.top_logprobs]) for t in choice.logprobs.content]
    want = [(t.token, t.logprob, [a.logprob for a in t.top_logprobs[:3]]) for t in golden.logprobs]
    assert got == want  # floats bitwise equal after the JSON round trip


def test_openai_client_streaming_matches_sdk(oai: openai.OpenAI, sdk: SteadyText) -> None:
    golden = sdk.generate(PROMPT, max_new_tokens=10)
    pieces = [
        c.choices[0].text
        for c in oai.completions.create(model="default", prompt=PROMPT, max_tokens=10, stream=True)
        if c.choices
    ]
    assert "".join(pieces) == golden.text and len(pieces) > 2
    chat = oai.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(chat)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == golden.text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_openai_client_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids[0] == "default" and {"smollm2-135m-instruct", "gemma-3-270m"} <= set(ids)


def test_structured_extra_body_matches_sdk(oai: openai.OpenAI, sdk: SteadyText) -> None:
    golden = sdk.generate("My favourite colour is", choices=CHOICES, max_new_tokens=8)
    response = oai.completions.create(
        model="default", prompt="My favourite colour is", max_tokens=8, extra_body={"choices": CHOICES}
    )
    assert response.choices[0].text == golden.text and golden.text in CHOICES
    schema: dict[str, object] = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    golden = sdk.generate("Alice is 31. JSON:", schema=schema, max_new_tokens=16)
    response = oai.completions.create(
        model="default", prompt="Alice is 31. JSON:", max_tokens=16, extra_body={"schema": schema}
    )
    assert response.choices[0].text == golden.text and isinstance(json.loads(golden.text)["age"], int)
    chat = oai.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Alice is 31. JSON:"}],
        max_tokens=16,
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    assert json.loads(chat.choices[0].message.content or "")["age"] >= 0


def test_seed_temperature_and_stop_map_to_sdk(server: ServeProcess, sdk: SteadyText) -> None:
    golden = sdk.generate(PROMPT, max_new_tokens=12, temperature=0.9, seed=7, eos_string=",")
    with server.client(timeout=120) as c:
        body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0.9, "seed": 7, "stop": [","]}
        got = c.post("/v1/completions", json=body).json()
    assert got["choices"][0]["text"] == golden.text
    _check_same(got["steadytext"], golden)


def test_sse_wire_format(server: ServeProcess, sdk: SteadyText) -> None:
    golden = sdk.generate(messages=[{"role": "user", "content": PROMPT}], max_new_tokens=8)
    with server.client(timeout=120) as c:
        response = c.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, "stream": True},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == golden.text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    _check_same(chunks[-1]["steadytext"], golden)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"prompt": "x", "n": 2}, 400, "n=2 is not supported"),
        ({"prompt": "x", "top_p": 0.5}, 400, "top_p"),
        ({"prompt": "x", "stop": ["a", "b"]}, 400, "one stop string"),
        ({"prompt": "x", "bogus": 1}, 400, "unknown parameters: bogus"),
        ({"prompt": "x", "model": "no-such-model"}, 404, "unknown model"),
        ({"prompt": "x", "model": "/etc/passwd.gguf"}, 400, "does not load model files"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_new_tokens must be >= 1"),
        ({"prompt": "x", "regex": "[a-z]+", "stop": "."}, 400, "eos_string cannot be combined"),
        ({"prompt": 3}, 400, "prompt must be a string"),
    ],
)
def test_errors_are_openai_shaped(server: ServeProcess, body: dict[str, Any], status: int, needle: str) -> None:
    with server.client(timeout=30) as c:
        response = c.post("/v1/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"] and set(error) >= {"message", "type", "param", "code"}


def test_openai_client_raises_typed_errors(oai: openai.OpenAI, server: ServeProcess) -> None:
    with pytest.raises(openai.BadRequestError, match="role must be one of"):
        oai.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}],  # type: ignore[misc, list-item]
        )
    with pytest.raises(openai.PermissionDeniedError, match="--allow-remote"):
        oai.completions.create(model="openai:gpt-4o", prompt="x")
    with server.client(timeout=30) as c:
        response = c.post("/v1/completions", content=b"{nope")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_metrics(server: ServeProcess, oai: openai.OpenAI) -> None:
    before = metric(server.metrics(), 'steadytext_requests_total{endpoint="completions",status="200"}')
    oai.completions.create(model="default", prompt="Metrics", max_tokens=3)
    text = server.metrics()
    assert metric(text, 'steadytext_requests_total{endpoint="completions",status="200"}') == before + 1
    assert metric(text, "steadytext_workers") == 1
    assert metric(text, "steadytext_workers_max") == 1
    assert metric(text, "steadytext_queue_depth") == 0
    assert metric(text, "steadytext_worker_restarts_total") == 0
    assert metric(text, "steadytext_generated_tokens_total") >= 3
    assert metric(text, "steadytext_tokens_per_second") > 0
    assert metric(text, "steadytext_cache_hits_total") == 0  # the cache is off in this module


def test_disconnect_frees_the_worker(server: ServeProcess, oai: openai.OpenAI, sdk: SteadyText) -> None:
    """A client that leaves mid-stream frees its worker (one worker here) promptly; the next request runs."""
    generations = server.health()["generations"]
    with server.client(timeout=120) as c:
        body = {"prompt": "Once upon a time", "max_tokens": 400, "stream": True}
        with c.stream("POST", "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            seen = [line for _, line in zip(range(6), lines, strict=False)]
            assert any(line.startswith("data: {") for line in seen)
            assert server.health()["workers_busy"] == 1
    t0 = time.monotonic()
    while server.health()["workers_busy"] != 0:
        assert time.monotonic() - t0 < 5, "the worker was not freed after the client disconnected"
        time.sleep(0.02)
    health = server.health()
    assert health["generations"] == generations  # cancelled, not run to the end
    golden = sdk.generate("After", max_new_tokens=4)
    assert oai.completions.create(model="default", prompt="After", max_tokens=4).choices[0].text == golden.text


def test_disconnect_frees_the_worker_of_a_plain_request(server: ServeProcess) -> None:
    generations = server.health()["generations"]
    with server.client(timeout=1.5) as c, pytest.raises(httpx.ReadTimeout):
        long = {"prompt": "Write a very long story about a dragon and a lighthouse.", "max_tokens": 2000}
        c.post("/v1/completions", json=long)  # gives up after 1.5 s, disconnects
    t0 = time.monotonic()
    while server.health()["workers_busy"] != 0:
        assert time.monotonic() - t0 < 5, "the worker was not freed after the client disconnected"
        time.sleep(0.02)
    assert server.health()["generations"] == generations


def test_auth(tmp_path: Path) -> None:
    with serve(tmp_path, env={"STEADYTEXT_SERVE_TOKEN": "s3cret"}, threads=1) as srv, srv.client(timeout=60) as c:
        body = {"prompt": "Hi", "max_tokens": 2}
        assert c.get("/health").status_code == 200  # liveness stays open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = c.post("/v1/completions", json=body, headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
            assert c.get("/metrics", headers=headers).status_code == 401
        assert c.post("/v1/completions", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        oai = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0)
        assert oai.completions.create(model="default", prompt="Hi", max_tokens=2).choices[0].text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_remote_models_need_the_server_flag(tmp_path: Path) -> None:
    """STEADYTEXT_UNSAFE_MODE in the server's environment or a request field never enables remote models; only
    --allow-remote does."""
    with ScriptedServer() as stub:
        stub.default = instant
        env = {"STEADYTEXT_LLAMACPP_BASE_URL": stub.url, "STEADYTEXT_UNSAFE_MODE": "1"}
        body = {"model": "llamacpp:m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        with serve(tmp_path, "--no-preload", env=env) as srv, srv.client(timeout=60) as c:
            assert c.post("/v1/chat/completions", json=body).status_code == 403
            assert c.post("/v1/chat/completions", json={**body, "unsafe_mode": True}).status_code == 403
        assert stub.requests == []  # nothing was sent upstream
        with serve(tmp_path, "--no-preload", "--allow-remote", env=env) as srv, srv.client(timeout=60) as c:
            response = c.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == "Hello world"
            assert c.post("/v1/chat/completions", json={**body, "unsafe_mode": True}).status_code == 403


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def test_graceful_shutdown_finishes_in_flight_streams(tmp_path: Path, sdk: SteadyText) -> None:
    golden = sdk.generate("In the beginning", max_new_tokens=40)
    with serve(tmp_path) as srv, srv.client(timeout=120) as c:
        body = {"prompt": "In the beginning", "max_tokens": 40, "stream": True}
        with c.stream("POST", "/v1/completions", json=body) as response:
            raw = b""
            for part in response.iter_raw():
                raw += part
                if raw.count(b"data: ") == 2:
                    srv.proc.send_signal(signal.SIGTERM)
                    time.sleep(0.3)
                    assert not _port_open(srv.url)  # no new connections while draining
        events = sse_events(raw)
        assert events[-1] == "[DONE]"
        assert "".join(e["choices"][0]["text"] for e in events[:-1]) == golden.text
        assert srv.proc.wait(30) == 0


def test_graceful_shutdown_ends_overdue_streams_cleanly(tmp_path: Path) -> None:
    with serve(tmp_path, "--shutdown-timeout", "0.5") as srv, srv.client(timeout=120) as c:
        body = {"prompt": "Once upon a time", "max_tokens": 1000, "stream": True}
        t0 = time.monotonic()
        with c.stream("POST", "/v1/completions", json=body) as response:
            raw = b""
            for part in response.iter_raw():
                raw += part
                if raw.count(b"data: ") == 2 and t0 > 0:
                    srv.proc.send_signal(signal.SIGTERM)
                    t0 = -time.monotonic()
        events = sse_events(raw)
        assert events[-1] == "[DONE]" and events[-2]["error"]["type"] == "server_shutdown"
        assert srv.proc.wait(30) == 0
