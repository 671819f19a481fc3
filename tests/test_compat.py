"""The original SteadyText's structured helpers: names, parameters and defaults, and the same bytes as generate()."""

import inspect
import re

import pytest
from pydantic import BaseModel

import steadytext_async as st
from steadytext_async import _compat

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)


class Person(BaseModel):
    name: str
    age: int


PROMPT = "Person: John, 30 years old. JSON:"
SENTIMENT = "Classify the sentiment of this review: 'I love it!'"
COMMON = [("max_tokens", 512), ("model", None), ("unsafe_mode", False), ("seed", 42)]


@pytest.mark.parametrize(
    ("name", "second", "extra"),
    [
        ("generate_json", "schema", [("return_pydantic", False)]),
        ("generate_regex", "pattern", []),
        ("generate_choice", "choices", []),
        ("generate_format", "format_type", []),
        ("generate_pydantic", "model_class", []),
    ],
)
def test_original_parameter_names_order_and_defaults(name: str, second: str, extra: list[tuple[str, object]]) -> None:
    for fn in (getattr(st, name), getattr(st, "a" + name)):
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params[:2]] == ["prompt", second]
        assert [(p.name, p.default) for p in params[2:-1]] == COMMON + extra
        assert params[-1].kind is inspect.Parameter.VAR_KEYWORD
    assert inspect.iscoroutinefunction(getattr(st, "a" + name))
    assert getattr(st, name) is getattr(_compat, name)
    assert st.DEFAULT_SEED == 42 and "generate_json" in st.__all__ and "agenerate_format" in dir(st)


def test_generate_json_is_generate_with_a_schema_and_returns_plain_json() -> None:
    text = st.generate_json(PROMPT, Person, 48)
    assert text == st.generate(PROMPT, 48, schema=Person)
    assert text == '{"name": "John", "age": 30}'  # the document itself: no <json-output> tags, no preamble
    assert st.generate_json(PROMPT, Person, 48, return_pydantic=True) == Person(name="John", age=30)
    schema = Person.model_json_schema()
    assert st.generate_json(PROMPT, schema, 48, return_pydantic=True) == text  # only models are instantiated


def test_generate_return_pydantic_gives_the_instance() -> None:
    person = st.generate(PROMPT, 48, schema=Person, return_pydantic=True)
    assert person == Person(name="John", age=30)
    assert st.generate(PROMPT, 48, schema=Person, return_pydantic=False) == '{"name": "John", "age": 30}'


async def test_async_twins_give_the_same_results() -> None:
    assert await st.agenerate_json(PROMPT, Person, 48) == st.generate_json(PROMPT, Person, 48)
    assert await st.agenerate_json(PROMPT, Person, 48, return_pydantic=True) == Person(name="John", age=30)
    assert await st.agenerate_pydantic(PROMPT, Person, 48) == Person(name="John", age=30)
    digits = await st.agenerate_regex("2 + 2 = ", r"[0-9]+", 8)
    assert re.fullmatch(r"[0-9]+", digits) and digits == st.generate_regex("2 + 2 = ", r"[0-9]+", 8)
    assert await st.agenerate_choice(SENTIMENT, ["positive", "negative"], 8) == "positive"
    assert await st.agenerate_format("2 + 2 = ", int, 8) == str(int(st.generate_format("2 + 2 = ", int, 8)))
    assert await st.agenerate(PROMPT, max_new_tokens=48, schema=Person, return_pydantic=True) == Person(
        name="John", age=30
    )


def test_regex_choice_format_pydantic() -> None:
    digits = st.generate_regex("2 + 2 = ", r"[0-9]+", 8)
    assert re.fullmatch(r"[0-9]+", digits) and digits == st.generate("2 + 2 = ", 8, regex=r"[0-9]+")
    assert st.generate_choice(SENTIMENT, ["positive", "negative", "neutral"]) == "positive"
    assert st.generate_format("2 + 2 = ", int, 8) == st.generate("2 + 2 = ", 8, schema=int)
    assert st.generate_format("Is the sky blue? Answer true or false:", bool, 8) in ("true", "false")
    assert st.generate_format("2 + 2 = ", str, 16).startswith('"')  # a JSON string, quotes included
    assert st.generate_pydantic(PROMPT, Person, 48) == Person(name="John", age=30)
    assert st.generate_choice("Colour:", ["red", "green"], seed=7, temperature=0.9) in ("red", "green")  # **kwargs


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(st.InvalidRequestError, match="format_type"):
        st.generate_format("x", list)
    with pytest.raises(st.InvalidRequestError, match="model_class"):
        st.generate_pydantic("x", dict)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        st.generate_json("x", Person, no_such_option=1)  # type: ignore[call-overload]
