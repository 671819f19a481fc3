"""MockProvider: deterministic answers, handlers, stop strings, errors, through the real client."""

from typing import Any

import pytest
from conftest import mock_text

import steadytext_async as st


async def test_default_answer_is_a_pure_function_of_the_request() -> None:
    mock = st.MockProvider()
    async with st.AsyncSteadyText(providers={"mock": mock}) as client:
        a = await client.generate("p", model="mock:x", max_new_tokens=5)
        b = await client.generate("p", model="mock:y", max_new_tokens=5)
        c = await client.generate("p", model="mock:x", max_new_tokens=5, seed=1, temperature=0.7)
        stopped = await client.generate("p", model="mock:x", max_new_tokens=5, eos_string=a.text.split()[2])
    assert a.text == b.text == mock_text("p", 5) and len(a.text.split()) == 5 and a.text != c.text
    assert a.finish_reason == "length" and a.usage.completion_tokens == 5 and len(a.token_ids) == 5
    assert stopped.finish_reason == "stop_string" and stopped.text == " ".join(a.text.split()[:2]) + " "
    assert a.fingerprint.provider == "mock" and a.fingerprint.model == "x" and a.fingerprint.inputs_sha256


async def test_handler_tokens_and_short_answers_end_with_eos() -> None:
    mock = st.MockProvider(lambda request: ["Hel", "lo", "!"] if request.prompt == "greet" else "one")
    async with st.AsyncSteadyText(providers={"mock": mock}) as client:
        pieces = [i async for i in client.stream("greet", model="mock:m", max_new_tokens=8, return_logprobs=True)]
        single = await client.generate("other", model="mock:m", max_new_tokens=8)
    result = pieces[-1]
    assert isinstance(result, st.GenerationResult)
    assert [p.text for p in pieces[:-1] if isinstance(p, st.Chunk)] == ["Hel", "lo", "!"]
    assert result.text == "Hello!" and result.finish_reason == "eos" and result.logprobs is not None
    assert [t.token for t in result.logprobs] == ["Hel", "lo", "!"]
    assert single.text == "one" and single.usage.completion_tokens == 1


async def test_handler_errors_reach_the_caller() -> None:
    def boom(request: st.GenerationRequest) -> str:
        raise st.RemoteServerError("scripted failure")

    async with st.AsyncSteadyText(providers={"mock": st.MockProvider(boom)}) as client:
        with pytest.raises(st.RemoteServerError, match="scripted failure"):
            await client.generate("x", model="mock:m", max_new_tokens=2)


async def test_constraint_is_checked_on_mock_output() -> None:
    mock = st.MockProvider(lambda request: "maybe")
    async with st.AsyncSteadyText(providers={"mock": mock}) as client:
        with pytest.raises(st.ConstraintError):
            await client.generate("x", model="mock:m", choices=["yes", "no"], max_new_tokens=4)
        mock.handler = lambda request: "yes"
        assert (await client.generate("x", model="mock:m", choices=["yes", "no"], max_new_tokens=4)).text == "yes"


@pytest.mark.blocks_loop  # generate_object (sync) from inside the loop, on purpose
async def test_generate_object_checks_the_output_once(
    mock_default: st.MockProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import BaseModel

    from steadytext_async.structured import normalize, remote, validate

    class Point(BaseModel):
        x: int

    checks: list[object] = []
    real = validate._schema_errors

    def recording(schema: dict[str, Any], value: Any) -> str | None:
        checks.append(value)
        return real(schema, value)

    monkeypatch.setattr(validate, "_schema_errors", recording)
    mock_default.handler = lambda request: '{"x": 3}'
    point = await st.agenerate_object("p", schema=Point, model="mock:m", max_new_tokens=8)
    assert point == Point(x=3) and checks == [{"x": 3}]
    assert st.generate_object("p", schema=Point, model="mock:m", max_new_tokens=8) == Point(x=3)
    assert len(checks) == 2
    mock_default.handler = lambda request: '{"x": "three"}'
    with pytest.raises(st.ConstraintError, match="does not match the JSON schema"):
        await st.agenerate_object("p", schema=Point, model="mock:m", max_new_tokens=8)
    constraint = st.GenerationRequest(prompt="p", constraint=normalize(schema=Point)).constraint
    assert constraint is not None and remote.translate(constraint, "openai") is remote.translate(constraint, "openai")
