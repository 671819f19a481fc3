"""Structured output through the public API: plain validated text, stream == non-stream, typed parsing."""

import json
import re

import pytest
from pydantic import BaseModel

import steadytext_async as st
from steadytext_async._options import ModelOptions

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)


class Person(BaseModel):
    name: str
    age: int


PROMPT = "Person: John, 30 years old. JSON:"


async def test_schema_output_is_plain_validated_json_and_streams_identically() -> None:
    client = st.default_client()
    r = await client.generate(PROMPT, schema=Person, max_new_tokens=48)
    assert r.finish_reason == "constraint_complete"
    assert Person.model_validate(json.loads(r.text)) == Person(name="John", age=30)
    assert "<json-output>" not in r.text
    items = [i async for i in client.stream(PROMPT, schema=Person, max_new_tokens=48)]
    assert isinstance(items[-1], st.GenerationResult) and items[-1].text == r.text
    assert "".join(i.text for i in items[:-1] if isinstance(i, st.Chunk)) == r.text
    same = await client.generate(PROMPT, schema=Person.model_json_schema(), max_new_tokens=48)
    assert same.text == r.text and same.fingerprint.inputs_sha256 == r.fingerprint.inputs_sha256


async def test_typed_convenience_returns_the_object() -> None:
    person = await st.agenerate_object(PROMPT, schema=Person, max_new_tokens=48)
    assert person == Person(name="John", age=30)
    number = st.generate_object("2 + 2 = ", schema=int, max_new_tokens=8)
    assert isinstance(number, int) and str(number) == st.generate("2 + 2 = ", schema=int, max_new_tokens=8)


async def test_choices_and_regex() -> None:
    review = "Classify the sentiment of this review: 'I love it!'"
    sentiment = await st.agenerate(review, choices=["positive", "negative", "neutral"])
    assert sentiment == "positive"
    text = await st.agenerate("2 + 2 = ", regex=r"[0-9]+", max_new_tokens=8)
    assert re.fullmatch(r"[0-9]+", text) and text == st.generate("2 + 2 = ", 8, regex=r"[0-9]+")


async def test_running_out_of_tokens_raises_with_partial_text() -> None:
    with pytest.raises(st.ConstraintError, match="the shortest valid output is 10 tokens") as info:
        await st.agenerate("Person:", schema=Person, max_new_tokens=3)
    assert info.value.partial_text.startswith("{")


async def test_the_default_model_fills_a_schema_sensibly() -> None:
    """Issue 19's target: the instruction-tuned default completes the document itself, with sensible values."""
    r = await st.default_client().generate("Create a person", schema=Person, max_new_tokens=128)
    assert r.finish_reason == "constraint_complete"
    person = Person.model_validate_json(r.text)
    assert person.name.strip() and 0 < person.age < 120
    extracted = await st.agenerate_object(
        "Extract the person: 'Alice is a 34 year old engineer from Oslo.'", schema=Person, max_new_tokens=48
    )
    assert extracted == Person(name="Alice", age=34)


async def test_output_is_closed_in_time_when_the_model_loops() -> None:
    client = st.default_client()
    base: ModelOptions = {"model": "gemma-3-270m"}  # the base model loops inside the name
    r = await client.generate("Create a person", schema=Person, max_new_tokens=40, **base)
    assert r.finish_reason == "constraint_forced"
    assert r.usage.completion_tokens <= 40
    person = Person.model_validate_json(r.text)
    assert person.name.startswith("The_Story_of_the_City_of_the_City")  # ("Day_of_the_Month" with repack on)
    items = [i async for i in client.stream("Create a person", schema=Person, max_new_tokens=40, **base)]
    assert isinstance(items[-1], st.GenerationResult) and items[-1].finish_reason == "constraint_forced"
    assert "".join(i.text for i in items[:-1] if isinstance(i, st.Chunk)) == r.text


async def test_constraint_errors_before_any_work() -> None:
    with pytest.raises(st.InvalidRequestError, match="regex"):
        await st.agenerate("x", regex="(unclosed")
    with pytest.raises(st.InvalidRequestError):
        await st.agenerate("x", choices=[])
    with pytest.raises(st.InvalidRequestError, match="eos_string"):
        await st.agenerate("x", choices=["a", "b"], eos_string="STOP")
