"""normalize(): every accepted form -> one Constraint; every bad input -> InvalidRequestError before any work."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import pickle
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from steadytext_async import InvalidRequestError
from steadytext_async.structured import Constraint, normalize


class Person(BaseModel):
    name: str
    age: int


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(TypedDict):
    x: int
    y: int


@dataclasses.dataclass
class Reading:
    value: float


class Unschemable:
    pass


def schema_of(c: Constraint | None) -> dict[str, object]:
    assert c is not None and c.kind == "json_schema"
    return c.schema


def test_none_given_is_none() -> None:
    assert normalize() is None
    assert normalize(response_format={"type": "text"}) is None


def test_dict_schema_canonical_text_and_sha() -> None:
    c = normalize(schema={"type": "object", "required": ["a"], "properties": {"b": {"type": "string"}, "a": {}}})
    assert c is not None
    # keywords sorted, property order kept (it is generation order)
    assert c.canonical == (
        '{"kind":"json_schema","schema":{"properties":{"b":{"type":"string"},"a":{}},"required":["a"],"type":"object"}}'
    )
    assert c.sha256 == hashlib.sha256(c.canonical.encode()).hexdigest()


def test_equivalent_dict_and_pydantic_model_are_the_same_constraint() -> None:
    from_model = normalize(schema=Person)
    from_dict = normalize(
        schema={
            "type": "object",
            "title": "Whatever",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "title": "Age"}},
            "required": ["name", "age"],
        }
    )
    assert from_model == from_dict
    assert from_model is not None and from_dict is not None
    assert from_model.sha256 == from_dict.sha256


def test_property_order_changes_the_constraint() -> None:
    a = normalize(schema={"type": "object", "properties": {"x": {}, "y": {}}})
    b = normalize(schema={"type": "object", "properties": {"y": {}, "x": {}}})
    assert a != b


def test_title_is_kept_where_it_is_a_property_name_or_data() -> None:
    c = normalize(
        schema={"type": "object", "properties": {"title": {"type": "string", "title": "T"}}, "default": {"title": "x"}}
    )
    assert schema_of(c) == {"default": {"title": "x"}, "properties": {"title": {"type": "string"}}, "type": "object"}


@pytest.mark.parametrize(
    ("tp", "expected"),
    [
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (str, {"type": "string"}),
        (list[int], {"items": {"type": "integer"}, "type": "array"}),
        (dict[str, float], {"additionalProperties": {"type": "number"}, "type": "object"}),
        (Literal["a", "b"], {"enum": ["a", "b"], "type": "string"}),
        (Color, {"enum": ["red", "blue"], "type": "string"}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045 - the typing form itself
        (int | None, {"anyOf": [{"type": "integer"}, {"type": "null"}]}),
        (
            Point,
            {
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
                "type": "object",
            },
        ),
        (Reading, {"properties": {"value": {"type": "number"}}, "required": ["value"], "type": "object"}),
        (
            Person,
            {
                "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "age"],
                "type": "object",
            },
        ),
    ],
)
def test_python_types(tp: object, expected: dict[str, object]) -> None:
    assert schema_of(normalize(schema=tp)) == expected


def test_nested_model_uses_defs() -> None:
    class Inner(BaseModel):
        v: int = Field(ge=0, le=9)

    class Outer(BaseModel):
        inner: Inner
        color: Color

    s = schema_of(normalize(schema=Outer))
    assert s["$defs"] == {
        "Color": {"enum": ["red", "blue"], "type": "string"},
        "Inner": {
            "properties": {"v": {"maximum": 9, "minimum": 0, "type": "integer"}},
            "required": ["v"],
            "type": "object",
        },
    }
    assert s["properties"] == {"inner": {"$ref": "#/$defs/Inner"}, "color": {"$ref": "#/$defs/Color"}}


def test_regex_and_choices() -> None:
    r = normalize(regex=r"[0-9]{3}")
    assert r is not None and r.kind == "regex" and r.pattern == "[0-9]{3}"
    assert r.canonical == '{"kind":"regex","pattern":"[0-9]{3}"}'
    c = normalize(choices=["yes", "no", "ça va"])
    assert c is not None and c.kind == "choices" and c.choices == ("yes", "no", "ça va")
    assert c.canonical == '{"kind":"choices","choices":["yes","no","ça va"]}'
    assert normalize(choices=("yes", "no")) == normalize(choices=["yes", "no"])
    assert normalize(choices=["no", "yes"]) != normalize(choices=["yes", "no"])


def test_response_format_shapes() -> None:
    assert schema_of(normalize(response_format={"type": "json_object"})) == {"type": "object"}
    rf = normalize(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": True, "schema": Person.model_json_schema()},
        }
    )
    assert rf is not None and rf.name == "person"
    assert rf.schema == schema_of(normalize(schema=Person))
    # the name reaches remote providers, so it is part of the identity
    assert rf.sha256 != normalize(schema=Person).sha256  # type: ignore[union-attr]
    unnamed = normalize(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "integer"}}})
    assert unnamed == normalize(schema=int)


def test_kind_accessors_refuse_other_kinds() -> None:
    c = normalize(regex="a")
    assert c is not None
    with pytest.raises(AttributeError):
        _ = c.schema
    with pytest.raises(AttributeError):
        _ = c.choices


def test_constraint_is_frozen_hashable_and_picklable() -> None:
    c = normalize(schema=Person)
    assert c is not None
    _ = c.schema  # fills the parse cache; must still pickle and compare equal
    clone = pickle.loads(pickle.dumps(c))
    assert clone == c and hash(clone) == hash(c) and clone.schema == c.schema
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.canonical = "{}"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schema": {"type": "integer"}, "regex": "a"}, "at most one"),
        ({"choices": ["a"], "response_format": {"type": "json_object"}}, "at most one"),
        ({"regex": "[a-"}, "invalid regex"),
        ({"regex": "(a)\\1"}, "unsupported regex"),
        ({"regex": "(?=a)a"}, "unsupported regex"),
        ({"regex": ""}, "non-empty"),
        ({"regex": 5}, "non-empty str"),
        ({"choices": []}, "must not be empty"),
        ({"choices": ["a", "b", "a"]}, "distinct"),
        ({"choices": ["a", ""]}, "non-empty str"),
        ({"choices": ["a", 1]}, "non-empty str"),
        ({"choices": "ab"}, "list of str"),
        ({"choices": {"a", "b"}}, "list of str"),
        ({"schema": {"type": "integer", "not": {"const": 3}}}, "unsupported JSON schema"),
        ({"schema": {"type": "array", "uniqueItems": True}}, "unsupported JSON schema"),
        ({"schema": set[int]}, "unsupported JSON schema"),
        ({"schema": {"type": "string", "format": "no-such-format"}}, "unsupported JSON schema"),
        ({"schema": {"$ref": "#/$defs/missing"}}, "unsupported JSON schema"),
        ({"schema": {"type": "nope"}}, "invalid JSON schema"),
        ({"schema": {"type": "integer", "minimum": "zero"}}, "invalid JSON schema"),
        ({"schema": {"type": "number", "const": float("nan")}}, "not JSON-serializable"),
        ({"schema": {1: "x"}}, "keys must be strings"),
        ({"schema": "int"}, "must be a JSON-schema dict"),
        ({"schema": 3}, "must be a JSON-schema dict"),
        ({"schema": True}, "must be a JSON-schema dict"),
        ({"schema": lambda x: x}, "must be a JSON-schema dict"),
        ({"schema": Unschemable}, "cannot derive a JSON schema"),
        ({"response_format": {"type": "xml"}}, "response_format type"),
        ({"response_format": {"type": "json_schema"}}, "needs"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}}, "name must"),
        ({"response_format": "json"}, "must be a dict"),
    ],
)
def test_invalid(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message) as info:
        normalize(**kwargs)
    assert isinstance(info.value, ValueError)


def test_typing_typeddict_on_old_python_is_a_clear_error() -> None:
    import sys
    import typing

    class Old(typing.TypedDict):
        x: int

    if sys.version_info >= (3, 12):
        assert schema_of(normalize(schema=Old))["type"] == "object"
    else:
        with pytest.raises(InvalidRequestError, match=r"typing_extensions\.TypedDict"):
            normalize(schema=Old)


def test_canonical_is_valid_json_with_non_ascii_kept() -> None:
    c = normalize(schema={"enum": ["é", "ü"]})
    assert c is not None and "é" in c.canonical
    assert json.loads(c.canonical)["schema"] == {"enum": ["é", "ü"]}
