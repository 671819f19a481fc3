"""The budget rule on the embedded model: constrained output completes within ``max_new_tokens`` whenever it can.

Runs the worker's decode loop (``_structured_runner``). The shortest valid outputs are checked byte for byte; the
issue's first example must come back valid; output that completes on its own must not change; and for generated
schemas, regexes and choice lists every budget from the minimum up gives valid output within the budget, while a
budget below it raises ConstraintError naming the minimum.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any

import pytest
from _structured_runner import Runner, shared_runner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from test_structured_model import SCHEMAS

from steadytext_async import ConstraintError
from steadytext_async.structured import Constraint, check_output, normalize, parse


class Person(BaseModel):
    name: str
    age: int


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)
    population_millions: int = Field(ge=0, le=40)


@pytest.fixture(scope="module")
def runner() -> Runner:
    return shared_runner()


def c(**kwargs: object) -> Constraint:
    constraint = normalize(**kwargs)
    assert constraint is not None
    return constraint


def shortest_text(runner: Runner, constraint: Constraint) -> tuple[str, int]:
    tokens = runner.factory.shortest(constraint)
    assert tokens is not None
    return runner.factory.tokenizer.decode_str(tokens), len(tokens)


# ---- the shortest valid output ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"schema": Person}, '{"name": "", "age": 0}'),
        ({"schema": City}, '{"name": "", "country": "", "population_millions": 0}'),
        ({"schema": int}, "0"),
        ({"schema": bool}, "true"),
        ({"schema": list[int]}, "[]"),
        ({"schema": dict[str, float]}, '{"": 0}'),  # llguidance's dict grammar needs one entry to close
        ({"schema": {"type": "integer", "minimum": 5, "maximum": 20}}, "5"),
        ({"schema": {"type": "string", "minLength": 3}}, '"aaa"'),
        ({"schema": {"enum": ["ab", "c"]}}, '"c"'),
        ({"regex": r"\d{3}-\d{3}-\d{4}"}, "000-000-0000"),
        ({"regex": r"[a-z]+@[a-z]+\.[a-z]+"}, "a@a.a"),
        ({"choices": ["positive", "negative", "neutral"]}, "positive"),
    ],
)
def test_shortest_valid_output(runner: Runner, kwargs: dict[str, Any], text: str) -> None:
    constraint = c(**kwargs)
    found, n = shortest_text(runner, constraint)
    assert found == text
    check_output(constraint, found)
    assert n <= len(runner.factory.tokenizer.tokenize_str(text))  # tokenized with the fewest tokens found


# ---- the issue's example and the budget boundary ---------------------------------------------------------------


def test_issue_example_returns_a_valid_person_at_128_tokens(runner: Runner) -> None:
    constraint = c(schema=Person)
    out = runner.generate("Create a person", constraint, 128)
    assert out.finish == "constraint_forced"  # the model loops inside the name; closing was forced
    assert len(out.token_ids) <= 128
    person = parse(Person, out.text)
    assert person.name.startswith("The_Story_of_the_City")  # (repack/tiled matmul off; "Day" with repack on)
    check_output(constraint, out.text)


def test_budget_boundary_is_the_shortest_output(runner: Runner) -> None:
    constraint = c(schema=Person)
    _, minimum = shortest_text(runner, constraint)
    assert minimum == 10
    with pytest.raises(ConstraintError, match=r"shortest valid output is 10 tokens") as info:
        runner.generate("Create a person", constraint, minimum - 1)
    assert info.value.partial_text.startswith('{"name": "')
    outputs = {}
    for budget in (minimum, minimum + 1, minimum + 5, 40):
        out = runner.generate("Create a person", constraint, budget)
        assert len(out.token_ids) <= budget and out.finish == "constraint_forced"
        outputs[budget] = parse(Person, out.text)
    assert outputs[minimum].name == ""  # no room for a name at all
    assert len(outputs[40].name) > len(outputs[minimum + 5].name) > 0  # a longer budget keeps more of the model's


def test_regex_and_choices_close_within_the_budget(runner: Runner) -> None:
    phone = c(regex=r"\d{3}-\d{3}-\d{4}")
    out = runner.generate("Call me at", phone, 12)
    assert re.fullmatch(phone.pattern, out.text) and len(out.token_ids) <= 12
    email = c(regex=r"[a-z]+@[a-z]+\.[a-z]+")
    out = runner.generate("Email: ", email, 6)
    assert re.fullmatch(email.pattern, out.text) and len(out.token_ids) <= 6
    choices = c(choices=["a very long answer indeed", "no"])
    out = runner.generate("Answer:", choices, 1)
    assert out.text in choices.choices and len(out.token_ids) == 1


def test_no_steering_when_the_shortest_output_is_too_long_to_search(runner: Runner) -> None:
    constraint = c(schema={"type": "array", "items": {"type": "integer"}, "minItems": 200})
    assert runner.factory.shortest(constraint) is None  # over MAX_TOKENS: the budget rule stays off
    matcher = runner.factory.matcher(constraint)
    assert matcher.minimum is None
    with pytest.raises(ConstraintError, match="ran out") as info:
        runner.generate("Numbers: ", constraint, 8)
    assert "shortest" not in str(info.value)
    assert info.value.partial_text.startswith("[")


# ---- output that completes on its own never changes ------------------------------------------------------------

NATURAL = [
    ("The capital of France, as a JSON record:\n", {"schema": City}),
    ("Person: John, 30 years old. JSON:", {"schema": Person}),
    ("The first moon landing happened on (YYYY-MM-DD): ", {"regex": r"[0-9]{4}-[0-9]{2}-[0-9]{2}"}),
    ("2 + 2 = ", {"schema": int}),
    ("Review: I loved every minute of it.\nSentiment:", {"choices": ["positive", "negative", "neutral"]}),
]


@pytest.mark.parametrize(("prompt", "kwargs"), NATURAL)
def test_output_that_completes_on_its_own_is_unchanged_at_its_exact_length(
    runner: Runner, prompt: str, kwargs: dict[str, Any]
) -> None:
    constraint = c(**kwargs)
    free = runner.generate(prompt, constraint, 96)
    assert free.finish == "constraint_complete"
    tight = runner.generate(prompt, constraint, len(free.token_ids))
    assert (tight.text, tight.token_ids) == (free.text, free.token_ids)
    assert tight.finish != "constraint_forced"


# ---- property: valid within the budget, or ConstraintError exactly below the minimum ---------------------------

PROPERTY = settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW_PROPERTY = settings(PROPERTY, max_examples=30)

REGEXES = st.lists(
    st.tuples(
        st.sampled_from(["[a-z]", "[0-9]", "[A-Z]", "x", "-", r"\.", "(cat|dog)", "[a-z]", "[0-9]"]),
        st.sampled_from(["", "?", "{1,3}", "{2}", "+", "*"]),
    ).map("".join),
    min_size=1,
    max_size=4,
).map("".join)
CHOICES = st.lists(st.text(alphabet=string.ascii_lowercase + " ", min_size=1, max_size=30), min_size=1, max_size=4)
CONSTRAINTS = st.one_of(
    SCHEMAS.map(lambda schema: {"schema": schema}),
    REGEXES.map(lambda pattern: {"regex": pattern}),
    CHOICES.map(lambda xs: {"choices": list(dict.fromkeys(xs))}),
)
PROMPTS = st.sampled_from(["Here is the JSON document:\n", "Create a person", "Answer: ", "Code: "])


def check_budget(runner: Runner, kwargs: dict[str, Any], prompt: str, budget_over_minimum: int) -> None:
    constraint = c(**kwargs)
    minimum = runner.factory.shortest(constraint)
    assert minimum is not None, kwargs
    budget = max(1, min(len(minimum) + budget_over_minimum, 512))
    if budget < len(minimum):
        with pytest.raises(ConstraintError, match=f"shortest valid output is {len(minimum)} tokens"):
            runner.generate(prompt, constraint, budget)
        return
    out = runner.generate(prompt, constraint, budget)
    assert len(out.token_ids) <= budget
    check_output(constraint, out.text)
    if constraint.kind == "json_schema":
        from jsonschema import validate  # type: ignore[import-untyped]

        validate(json.loads(out.text), kwargs["schema"])


@PROPERTY
@given(kwargs=CONSTRAINTS, prompt=PROMPTS, over=st.integers(-3, 12))
def test_every_budget_gives_valid_output_or_error_below_minimum(
    runner: Runner, kwargs: dict[str, Any], prompt: str, over: int
) -> None:
    check_budget(runner, kwargs, prompt, over)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # up to 30 generations of up to 512 tokens
@SLOW_PROPERTY
@given(kwargs=CONSTRAINTS, prompt=PROMPTS, over=st.one_of(st.integers(-3, 40), st.integers(41, 512)))
def test_every_budget_up_to_512_gives_valid_output_or_error_below_minimum(
    runner: Runner, kwargs: dict[str, Any], prompt: str, over: int
) -> None:
    check_budget(runner, kwargs, prompt, over)
