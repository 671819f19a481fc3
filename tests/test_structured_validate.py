"""check_output() and parse(): the final guard every local and remote output passes through."""

from __future__ import annotations

import dataclasses
import enum

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from steadytext_async import ConstraintError
from steadytext_async.structured import Constraint, check_output, normalize, parse


class Person(BaseModel):
    name: str = Field(max_length=5)
    age: int


class Color(enum.Enum):
    RED = "red"


class Point(TypedDict):
    x: int


@dataclasses.dataclass
class Reading:
    value: float


def c(**kwargs: object) -> Constraint:
    constraint = normalize(**kwargs)
    assert constraint is not None
    return constraint


@pytest.mark.parametrize(
    ("constraint", "text"),
    [
        (c(schema=Person), '{"name": "Al", "age": 3}'),
        (c(schema=Person), '{"age":3,"name":"Al","extra":true}'),  # extra keys are allowed by the schema
        (c(schema=int), "42"),
        (c(schema=list[int]), "[1, 2]"),
        (c(regex=r"[0-9]{3}"), "123"),
        (c(choices=["yes", "no"]), "no"),
        (c(response_format={"type": "json_object"}), "{}"),
    ],
)
def test_valid(constraint: Constraint, text: str) -> None:
    check_output(constraint, text)


@pytest.mark.parametrize(
    ("constraint", "text", "message"),
    [
        (c(schema=Person), '{"name": "Alfred", "age": 3}', "name: 'Alfred' is too long"),
        (c(schema=Person), '{"name": "Al"}', "'age' is a required property"),
        (c(schema=Person), '{"name": "Al", "age": 3', "not valid JSON"),
        (c(schema=int), "4.5", "is not of type 'integer'"),
        (c(schema=int), "", "not valid JSON"),
        (c(regex=r"[0-9]{3}"), "1234", "does not match regex"),
        (c(regex=r"[0-9]{3}"), "123\n", "does not match regex"),
        (c(choices=["yes", "no"]), "yes ", "not one of the choices"),
        (c(schema={"type": "string", "format": "date"}), '"2023-02-30"', "is not a 'date'"),
    ],
)
def test_invalid_raises_with_partial_text(constraint: Constraint, text: str, message: str) -> None:
    with pytest.raises(ConstraintError, match=message) as info:
        check_output(constraint, text)
    assert info.value.partial_text == text


def test_parse_returns_typed_values() -> None:
    person = parse(Person, '{"name": "Al", "age": 3}')
    assert isinstance(person, Person) and person == Person(name="Al", age=3)
    assert parse(int, "7") == 7
    assert parse(list[int], "[1, 2]") == [1, 2]
    assert parse(dict[str, float], '{"a": 1.5}') == {"a": 1.5}
    assert parse(Color, '"red"') is Color.RED
    assert parse(Point, '{"x": 1}') == {"x": 1}
    assert parse(Reading, '{"value": 2}') == Reading(value=2.0)
    assert parse(int | None, "null") is None
    assert parse({"type": "object", "properties": {"a": {"type": "integer"}}}, '{"a": 1}') == {"a": 1}


def test_parse_rejects_what_the_schema_rejects() -> None:
    with pytest.raises(ConstraintError, match="too long"):
        parse(Person, '{"name": "Alfred", "age": 3}')
    with pytest.raises(ConstraintError):
        parse(int, '"7"')  # pydantic's lax mode would take it; the schema does not
