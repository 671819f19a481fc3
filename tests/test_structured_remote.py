"""remote.translate(): the request-body fragment per provider, and turning answers back into plain output."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from steadytext_async import ConstraintError, InvalidRequestError
from steadytext_async.structured import Constraint, check_output, normalize
from steadytext_async.structured.remote import PROVIDER_CAPABILITIES, RemoteCapabilities, translate


class Person(BaseModel):
    name: str
    age: int


class Loose(BaseModel):
    name: str
    nick: str | None = None


def c(**kwargs: object) -> Constraint:
    constraint = normalize(**kwargs)
    assert constraint is not None
    return constraint


PERSON_SCHEMA = {
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "type": "object",
}


def test_openai_schema_is_strict_json_schema() -> None:
    t = translate(c(schema=Person), "openai")
    assert t.body == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": PERSON_SCHEMA, "strict": True},
        }
    }
    assert t.output('{"name": "A", "age": 1}') == '{"name": "A", "age": 1}'


def test_openai_strict_off_when_schema_breaks_strict_rules() -> None:
    body = translate(c(schema=Loose), "openai").body
    assert body["response_format"]["json_schema"]["strict"] is False
    body = translate(c(schema=dict[str, int]), "openai").body
    assert body["response_format"]["json_schema"]["strict"] is False


def test_response_format_name_is_kept() -> None:
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": Person.model_json_schema()}}
    body = translate(c(response_format=rf), "openai").body
    assert body["response_format"]["json_schema"]["name"] == "person"


def test_openai_choices_become_a_wrapped_enum_and_unwrap() -> None:
    t = translate(c(choices=["yes", "no"]), "openai")
    assert t.body == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "choice",
                "schema": {
                    "type": "object",
                    "properties": {"choice": {"type": "string", "enum": ["yes", "no"]}},
                    "required": ["choice"],
                    "additionalProperties": False,
                },
                "strict": True,
            },
        }
    }
    assert t.output('{"choice": "no"}') == "no"
    with pytest.raises(ConstraintError) as info:
        t.output('{"answer": "no"}')
    assert info.value.partial_text == '{"answer": "no"}'


def test_openai_regex_and_non_object_root_are_clear_errors() -> None:
    with pytest.raises(InvalidRequestError, match="cannot constrain output to a regex"):
        translate(c(regex="[0-9]+"), "openai")
    with pytest.raises(InvalidRequestError, match="object at the root"):
        translate(c(schema=int), "openai")


def test_vllm_uses_guided_extensions() -> None:
    assert translate(c(regex="[0-9]+"), "vllm").body == {"guided_regex": "[0-9]+"}
    t = translate(c(choices=["yes", "no"]), "vllm")
    assert t.body == {"guided_choice": ["yes", "no"]}
    assert t.output("yes") == "yes"
    assert translate(c(schema=int), "vllm").body == {
        "response_format": {"type": "json_schema", "json_schema": {"name": "output", "schema": {"type": "integer"}}}
    }


def test_generic_openai_compat_choices_are_a_json_string_enum() -> None:
    t = translate(c(choices=["a b", "c"]), "openai_compat")
    assert t.body == {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "choice", "schema": {"type": "string", "enum": ["a b", "c"]}},
        }
    }
    assert t.output('"a b"') == "a b"
    with pytest.raises(ConstraintError):
        t.output("3")
    with pytest.raises(InvalidRequestError, match="regex"):
        translate(c(regex="x"), "openai_compat")


def test_capabilities_object_and_unknown_provider() -> None:
    caps = RemoteCapabilities(regex_field="regex")
    assert translate(c(regex="x+"), caps).body == {"regex": "x+"}
    with pytest.raises(InvalidRequestError, match="unknown provider"):
        translate(c(regex="x"), "nope")
    assert set(PROVIDER_CAPABILITIES) >= {"openai", "vllm", "openai_compat"}


def test_remote_answers_are_checked_after_unwrapping() -> None:
    constraint = c(choices=["yes", "no"])
    t = translate(constraint, "openai")
    check_output(constraint, t.output('{"choice": "yes"}'))
    with pytest.raises(ConstraintError):
        check_output(constraint, t.output('{"choice": "maybe"}'))
