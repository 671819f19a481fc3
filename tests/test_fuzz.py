"""Property-based fuzzing of the public entry points: every input yields a result or one typed error.

Targets: the generation arguments, schema dicts, regexes, choices, recordings passed to replay/verify, and remote
response bodies and SSE frames (over ``httpx.MockTransport`` for volume, and from a loopback server through the
client, where nothing may be cached on error). CI runs the bounded form; ``-m slow`` runs 20× as many examples.
"""

from __future__ import annotations

import asyncio
import json
import string
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from _remote_servers import Action, ScriptedServer, chat_doc, chat_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s

import steadytext_async as st
from steadytext_async import AsyncSteadyText, SteadyTextError
from steadytext_async._exceptions import InvalidRequestError
from steadytext_async._models import ModelSpec
from steadytext_async._options import RequestOptions
from steadytext_async._replay import load_recording, request_from_fingerprint
from steadytext_async._validate import build_request
from steadytext_async.providers.base import ProviderChunk, ProviderDone
from steadytext_async.providers.openai_compat import OpenAICompatProvider
from steadytext_async.providers.presets import PRESETS, RemoteOptions, register_provider, unregister_provider
from steadytext_async.structured import normalize
from steadytext_async.structured.validate import check_output

T = TypeVar("T")
SCALES = [pytest.param(1, id="ci"), pytest.param(20, id="slow", marks=[pytest.mark.slow, pytest.mark.timeout(3600)])]
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)

json_leaf = s.none() | s.booleans() | s.integers(-(2**70), 2**70) | s.floats() | s.text(max_size=20)
json_value = s.recursive(
    json_leaf, lambda v: s.lists(v, max_size=4) | s.dictionaries(s.text(max_size=8), v, max_size=4), max_leaves=20
)
anything = json_value | s.binary(max_size=8) | s.tuples(s.integers()) | s.just(object()) | s.just(float("nan"))


def run_examples(scale: int, examples: int, strategy: s.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    settings(FUZZ, max_examples=examples * scale)(given(strategy)(check))()


# -- arguments ---------------------------------------------------------------------------------------------------

ARGUMENTS = {
    "max_new_tokens": s.integers(-5, 10**9) | anything,
    "return_logprobs": s.booleans() | anything,
    "eos_string": s.text(max_size=10) | anything,
    "model": s.sampled_from(["gemma-3-270m", "x.gguf", "openai:gpt", "nope:m", "C:\\m.gguf", "a\x00b", "/"]) | anything,
    "model_repo": s.text(max_size=10) | s.none(),
    "model_filename": s.text(max_size=10) | s.none(),
    "size": s.sampled_from(["mini", "small", "large", "huge"]) | anything,
    "seed": s.integers(-5, 2**65) | anything,
    "temperature": s.floats() | anything,
    "unsafe_mode": s.booleans() | anything,
    "strict": s.booleans() | s.none() | anything,
}


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_generation_arguments(scale: int) -> None:
    strategy = s.tuples(s.text(max_size=30) | anything, s.fixed_dictionaries({}, optional=ARGUMENTS))

    def check(case: tuple[Any, dict[str, Any]]) -> None:
        prompt, kwargs = case
        try:
            request = build_request(prompt, **kwargs)
        except SteadyTextError:
            return
        assert request.prompt == prompt and request.max_new_tokens >= 1

    run_examples(scale, 400, strategy, check)


# -- constraints -------------------------------------------------------------------------------------------------

KEYWORDS = (
    "type properties items enum const required anyOf oneOf allOf $ref $defs minimum maxLength pattern format "
    "additionalProperties prefixItems not $schema"
).split()
TYPES = s.sampled_from(["object", "array", "string", "integer", "number", "boolean", "null", "weird"])
schema_leaf = s.fixed_dictionaries({"type": TYPES}) | s.dictionaries(s.sampled_from(KEYWORDS), json_leaf, max_size=3)
schemas = s.recursive(
    schema_leaf,
    lambda sub: s.dictionaries(
        s.sampled_from(KEYWORDS), sub | s.lists(sub, max_size=3) | s.dictionaries(s.text(max_size=5), sub, max_size=3)
        | json_leaf, max_size=4,
    ),
    max_leaves=15,
)  # fmt: skip
regexes = s.text(alphabet=string.ascii_letters[:6] + string.digits[:3] + r"()[]{}|*+?.^$\-,:dws!", max_size=16)


def constraint_or_typed_error(**kwargs: Any) -> Any:
    try:
        return normalize(**kwargs)
    except InvalidRequestError:
        return None


def test_an_unknown_meta_schema_validates_against_the_latest_draft_without_a_warning() -> None:
    """Regression (found by test_fuzz_schema_dicts): ``{"$schema": ""}`` passed the request check, then output
    validation called jsonschema's ``validator_for`` without a default, whose DeprecationWarning is an error here."""
    constraint = constraint_or_typed_error(schema={"$schema": ""})
    assert constraint is not None
    check_output(constraint, "{}")  # valid: no ConstraintError, and no warning (warnings are errors)


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_schema_dicts(scale: int) -> None:
    def check(schema: Any) -> None:
        constraint = constraint_or_typed_error(schema=schema)
        if constraint is not None:
            for text in ("{}", "[]", '"x"', "1", "null", "{"):
                try:
                    check_output(constraint, text)
                except st.ConstraintError:
                    pass

    run_examples(scale, 300, schemas | anything, check)


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_regexes(scale: int) -> None:
    def check(case: tuple[str, str]) -> None:
        regex, text = case
        constraint = constraint_or_typed_error(regex=regex)
        if constraint is not None:
            try:
                check_output(constraint, text)
            except st.ConstraintError:
                pass

    run_examples(scale, 300, s.tuples(regexes, s.text(max_size=40)), check)


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_choices_and_response_formats(scale: int) -> None:
    def check(case: tuple[Any, Any]) -> None:
        choices, response_format = case
        constraint = constraint_or_typed_error(choices=choices)
        if constraint is not None:
            assert list(constraint.choices) == list(choices)
            check_output(constraint, choices[0])
        constraint_or_typed_error(response_format=response_format)

    json_schema = s.fixed_dictionaries({"schema": schemas}, optional={"name": s.text(max_size=70)})
    formats = s.fixed_dictionaries(
        {"type": s.sampled_from(["json_object", "json_schema", "text", "x"])}, optional={"json_schema": json_schema}
    )
    run_examples(scale, 300, s.tuples(s.lists(s.text(max_size=6), max_size=6) | anything, formats | anything), check)


# -- recordings ------------------------------------------------------------------------------------------------

BASE_FP: dict[str, Any] = {
    "package_version": st.__version__, "provider": "local", "model": "gemma-3-270m", "prompt": "p",
    "max_new_tokens": 4, "eos_string": "[EOS]", "temperature": 0.0, "seed": 42, "top_k": 40, "top_p": 0.95,
    "min_p": 0.05, "logprobs": False, "output_sha256": "0" * 64,
}  # fmt: skip
FP_FIELDS = [*BASE_FP, "constraint", "requested_model", "requested_size", "requested_model_repo",
             "requested_model_filename", "fallback", "top_logprobs", "inputs_sha256"]  # fmt: skip
edits = s.dictionaries(s.sampled_from(FP_FIELDS), json_value | s.sampled_from(
    ['{"kind":"regex","pattern":"a+"}', '{"pattern":"a"}', '{"kind":"json_schema","schema":{}}', "openai", "small"]
), max_size=4)  # fmt: skip


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_recordings(scale: int) -> None:
    def check(case: tuple[dict[str, Any], bool, Any]) -> None:
        changes, as_result, raw = case
        fp = {**BASE_FP, **changes}
        for source in (json.dumps({"text": "x", "fingerprint": fp} if as_result else fp, default=str), raw):
            try:
                fingerprint, _ = load_recording(source)
                request = request_from_fingerprint(fingerprint)
            except SteadyTextError:
                continue
            assert request.prompt == fingerprint.prompt

    run_examples(scale, 300, s.tuples(edits, s.booleans(), json_value | s.text(max_size=30) | anything), check)


# -- remote responses ------------------------------------------------------------------------------------------

SSE_LINES = s.lists(
    s.sampled_from(["data: [DONE]", "data: {}", "data: {\"choices\": []}", ": comment", "event: x", "data:", "",
                    "id: 1", "retry: x", "data: {\"error\": {\"message\": \"no\"}}"])
    | s.builds(lambda v: "data: " + json.dumps(v), json_value)
    | s.builds(lambda t, f: "data: " + json.dumps({"choices": [{"delta": {"content": t}, "finish_reason": f}]}),
               s.text(max_size=8) | json_leaf, s.sampled_from([None, "stop", "length", "eos", "odd"]) | json_leaf)
    | s.text(max_size=12),
    max_size=8,
)  # fmt: skip
DOCUMENTS = (
    s.builds(lambda v: json.dumps(v).encode(), json_value)
    | s.builds(lambda t, f: json.dumps(chat_doc(t, f)).encode(), s.text(max_size=8), s.sampled_from(["stop", "length", "x"]))  # noqa: E501
    | s.binary(max_size=30)
)  # fmt: skip
BODIES = s.one_of(
    s.tuples(s.just("text/event-stream"), SSE_LINES.map(lambda lines: "\n".join(lines).encode())),
    s.tuples(s.sampled_from(["application/json", "text/plain", ""]), DOCUMENTS),
)
SPEC = ModelSpec(provider="x", name="m")


async def _run_provider(content_type: str, body: bytes, kwargs: dict[str, Any], sse: bool) -> list[Any]:
    headers = {"content-type": content_type} if content_type else {}
    p = OpenAICompatProvider(
        PRESETS["vllm"], api_key="sk-fuzz-secret-key", transport=httpx.MockTransport(
            lambda r: httpx.Response(200, headers=headers, content=body)),
    )  # fmt: skip
    try:
        return [e async for e in p.stream(SPEC, build_request("hi", **kwargs), sse=sse)]
    finally:
        await p.aclose()


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_remote_bodies_over_mock_transport(scale: int) -> None:
    requests = s.sampled_from([{}, {"return_logprobs": True}, {"eos_string": "\n"}, {"choices": ["yes", "no"]},
                               {"max_new_tokens": 1}])  # fmt: skip

    def check(case: tuple[tuple[str, bytes], dict[str, Any], bool]) -> None:
        (content_type, body), kwargs, sse = case
        try:
            events = asyncio.run(_run_provider(content_type, body, kwargs, sse))
        except SteadyTextError as exc:
            assert "sk-fuzz-secret-key" not in str(exc)
            return
        assert isinstance(events[-1], ProviderDone)
        assert all(isinstance(e, ProviderChunk) for e in events[:-1])

    run_examples(scale, 300, s.tuples(BODIES, requests, s.booleans()), check)


class LoopThread:
    """One event loop on its own thread, so one client serves every Hypothesis example."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[tuple[ScriptedServer, AsyncSteadyText, LoopThread]]:
    loop = LoopThread()
    with ScriptedServer() as srv:
        register_provider("fuzzed", base_url=srv.url, options=RemoteOptions(max_attempts=1, timeout=5), replace=True)
        client = loop.run(_make_client(tmp_path))
        try:
            yield srv, client, loop
        finally:
            loop.run(client.aclose())
            unregister_provider("fuzzed")
            loop.close()


async def _make_client(tmp_path: Path) -> AsyncSteadyText:
    return AsyncSteadyText(cache_disabled=False, cache_dir=tmp_path)


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_remote_responses_from_a_loopback_server(
    scale: int, loopback: tuple[ScriptedServer, AsyncSteadyText, LoopThread]
) -> None:
    srv, client, loop = loopback
    counter = iter(range(10**9))
    actions = s.one_of(
        s.builds(lambda events: Action("sse", events=events), SSE_LINES.map(lambda ls: [f"{x}\n\n" for x in ls])),
        s.builds(lambda body, status: Action("json", status=status, body=body), DOCUMENTS, s.sampled_from([200, 200, 400, 500])),  # noqa: E501
        s.just(Action("sse", events=chat_events(["fine"]))),
        s.just(Action("raw", raw=b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab")),
    )  # fmt: skip

    def check(case: tuple[Action, bool]) -> None:
        action, stream = case
        prompt = f"p{next(counter)}"  # a fresh cache key per example
        srv.reset(action, action)

        async def once() -> Any:
            kwargs: RequestOptions = {"model": "fuzzed:m", "unsafe_mode": True, "max_new_tokens": 8}
            if stream:
                return [item async for item in client.stream(prompt, **kwargs)][-1]
            return await client.generate(prompt, **kwargs)

        try:
            result = loop.run(once())
        except SteadyTextError:
            before = len(srv.requests)
            with pytest.raises(SteadyTextError):  # nothing was cached: the same call reaches the server again
                loop.run(once())
            assert len(srv.requests) == before + 1
            return
        assert isinstance(result, st.GenerationResult) and not result.cached
        again = loop.run(once())
        assert again.cached and again.text == result.text and len(srv.requests) == 1

    run_examples(scale, 60, s.tuples(actions, s.booleans()), check)


@pytest.mark.parametrize("scale", SCALES)
def test_fuzz_verify_command_line(scale: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``steadytext-async verify`` on arbitrary files: exit code 2 and one line on stderr, never a traceback."""
    from steadytext_async.cli import EXIT_BAD_INPUT, main

    path = tmp_path / "recording.json"
    contents = s.binary(max_size=64) | s.builds(lambda v: json.dumps(v).encode(), json_value) | s.builds(
        lambda e: json.dumps({"fingerprint": {**BASE_FP, **e, "provider": "openai"}}).encode(), edits
    )  # fmt: skip

    def check(content: bytes) -> None:
        path.write_bytes(content)
        assert main(["verify", str(path)]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.startswith("steadytext-async: error:") and "Traceback" not in err

    run_examples(scale, 100, contents, check)
