"""Local enforcement end to end on the embedded gemma-3-270m: a decode loop shaped like ``_worker/child/worker.py``.

The model and the llguidance tokenizer are built once for this module (one thread). Hypothesis draws schemas,
regexes and choice lists from subsets whose outputs are bounded, so each example finishes within a token budget
computed from the constraint; every output must then validate.
"""

from __future__ import annotations

import json
import re
import string
from typing import Annotated, Any

import numpy as np
import pytest
from _structured_runner import Runner, shared_runner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from steadytext_async import ConstraintError
from steadytext_async.structured import Constraint, check_output, normalize, parse

HYPOTHESIS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def runner() -> Runner:
    return shared_runner()


def c(**kwargs: object) -> Constraint:
    constraint = normalize(**kwargs)
    assert constraint is not None
    return constraint


# ---- fixed cases ---------------------------------------------------------------------------------------------


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)
    population_millions: int = Field(ge=0, le=40)


def test_pydantic_schema_gives_clean_validating_json(runner: Runner) -> None:
    constraint = c(schema=City)
    out = runner.generate("The capital of France, as a JSON record:\n", constraint, 60)
    assert out.finish == "constraint_complete"
    assert out.text.startswith('{"name": "') and out.text.endswith("}")
    check_output(constraint, out.text)
    city = parse(City, out.text)
    assert isinstance(city, City)
    assert list(json.loads(out.text)) == ["name", "country", "population_millions"]


def test_greedy_constrained_output_is_deterministic(runner: Runner) -> None:
    constraint = c(schema=City)
    prompt = "A JSON record about Tokyo:\n"
    first = runner.generate(prompt, constraint, 60)
    second = runner.generate(prompt, constraint, 60)
    assert (first.text, first.token_ids, first.finish) == (second.text, second.token_ids, second.finish)


def test_seeded_sampling_under_a_constraint_is_valid_and_repeatable(runner: Runner) -> None:
    constraint = c(choices=["red", "green", "blue", "light blue"])
    outs = [runner.generate("My favourite colour is", constraint, 8, temperature=1.5, seed=s) for s in (1, 1, 2, 3)]
    assert outs[0] == outs[1]
    for out in outs:
        assert out.text in constraint.choices


def test_choices_output_is_exactly_one_choice(runner: Runner) -> None:
    constraint = c(choices=["positive", "negative", "neutral"])
    out = runner.generate("Review: I loved every minute of it.\nSentiment:", constraint, 8)
    assert out.text == "positive"
    assert out.finish == "constraint_complete"


def test_regex_output_fullmatches(runner: Runner) -> None:
    constraint = c(regex=r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
    out = runner.generate("The first moon landing happened on (YYYY-MM-DD): ", constraint, 16)
    assert re.fullmatch(constraint.pattern, out.text)
    assert out.text.startswith("1969-")


def test_open_ended_output_ends_where_the_model_leaves_the_grammar(runner: Runner) -> None:
    constraint = c(regex=r"[A-Z][a-z]+( [A-Z][a-z]+)?")
    out = runner.generate("The name of the first man on the moon: ", constraint, 12)
    assert (out.text, out.finish) == ("Benjamin Franklin", "constraint_complete")
    out = runner.generate("2 + 2 = ", c(schema=int), 12)
    assert (out.text, out.finish) == ("4", "constraint_complete")  # not "4000...": "\n" ends it
    out = runner.generate("Count: ", c(regex=r"[0-9]+"), 12)
    assert (out.text, out.finish) == ("100000000000", "length")  # the model's own choice: complete, so returned


def test_out_of_tokens_is_a_constraint_error_with_partial_text(runner: Runner) -> None:
    constraint = c(schema=City)
    with pytest.raises(ConstraintError) as info:
        runner.generate("The capital of France, as a JSON record:\n", constraint, 4)
    partial = info.value.partial_text
    assert partial.startswith("{") and len(partial) > 1
    full = runner.generate("The capital of France, as a JSON record:\n", constraint, 60)
    assert full.text.startswith(partial)


def test_top_level_scalars_and_containers(runner: Runner) -> None:
    cases: list[tuple[Any, str]] = [
        (bool, "Is the sky blue? "),
        (float, "Pi is about "),
        (list[int], "The first primes: "),
        (dict[str, float], "Prices in euros as JSON: "),
        (Annotated[str, Field(max_length=12)], "A greeting in quotes: "),
    ]
    outputs = []
    for tp, prompt in cases:
        constraint = c(schema=tp)
        out = runner.generate(prompt, constraint, 40)
        check_output(constraint, out.text)
        parse(tp, out.text)
        outputs.append(out.text)
    assert outputs[:4] == ["false", "1000", "[-1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "{}"]  # repack/tiled-mm off


# ---- the mask itself -------------------------------------------------------------------------------------------


def test_mask_allows_exactly_the_grammar_tokens(runner: Runner) -> None:
    matcher = runner.factory.matcher(c(regex=r"[0-9]{1,3}"))
    logits = np.zeros(runner.n_vocab, dtype=np.float32)
    matcher.mask(logits)
    allowed = set(np.flatnonzero(logits == 0).tolist())
    digits = {t for t in range(runner.n_vocab) if re.fullmatch(rb"[0-9]{1,3}", runner.piece(t))}
    assert allowed == digits
    assert not set(runner.factory.end_tokens) & allowed  # empty output is not complete
    assert np.isneginf(logits[sorted(set(range(runner.n_vocab)) - allowed)]).all()


def test_end_tokens_allowed_exactly_when_complete(runner: Runner) -> None:
    assert runner.factory.end_tokens == [1, 106, 212]  # <eos>, <end_of_turn> and gemma's third end token
    matcher = runner.factory.matcher(c(regex=r"[0-9]+"))
    seven = runner.tokenize(b"7", add_bos=False, special=False)
    assert len(seven) == 1
    matcher.advance(seven[0])
    assert matcher.accepting and not matcher.done
    logits = np.zeros(runner.n_vocab, dtype=np.float32)
    matcher.mask(logits)
    assert (logits[runner.factory.end_tokens] == 0).all()
    done = runner.factory.matcher(c(choices=["7"]))
    done.advance(seven[0])
    assert done.done


def test_forbidden_token_is_refused(runner: Runner) -> None:
    matcher = runner.factory.matcher(c(regex=r"[0-9]+"))
    letter = runner.tokenize(b"x", add_bos=False, special=False)[0]
    with pytest.raises(ConstraintError):
        matcher.advance(letter)


def test_compiled_constraints_are_cached_per_sha256(runner: Runner) -> None:
    a = c(schema={"type": "object", "properties": {"q": {"type": "integer"}}})
    b = c(schema={"properties": {"q": {"type": "integer", "title": "Q"}}, "type": "object"})
    assert a.sha256 == b.sha256
    runner.factory.matcher(a)
    assert runner.factory.is_cached(b)
    m1, m2 = runner.factory.matcher(a), runner.factory.matcher(b)
    assert m1 is not m2  # independent state per request
    token = runner.tokenize(b'{"', add_bos=False, special=False)[0]
    m1.advance(token)
    logits = np.zeros(runner.n_vocab, dtype=np.float32)
    m2.mask(logits)
    assert logits[token] == 0  # m2 is still at the start


# ---- Hypothesis: generated constraints always yield valid output -----------------------------------------------

KEYS = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6)
WORDS = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=5)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just({"type": "boolean"}),
        st.just({"type": "null"}),
        st.tuples(st.integers(-100, 100), st.integers(0, 200)).map(
            lambda t: {"type": "integer", "minimum": t[0], "maximum": t[0] + t[1]}
        ),
        st.tuples(st.integers(0, 2), st.integers(1, 6)).map(
            lambda t: {"type": "string", "minLength": t[0], "maxLength": t[0] + t[1]}
        ),
        st.lists(WORDS, min_size=1, max_size=4, unique=True).map(lambda xs: {"enum": xs}),
        WORDS.map(lambda w: {"const": w}),
        st.just({"type": "string", "pattern": "^[a-z]{1,5}$"}),
    )


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def obj(props: dict[str, Any], n_required: int) -> dict[str, Any]:
        return {"type": "object", "properties": props, "required": list(props)[:n_required]}

    return st.one_of(
        st.tuples(children, st.integers(0, 2), st.integers(0, 1)).map(
            lambda t: {"type": "array", "items": t[0], "minItems": min(t[2], t[1]), "maxItems": t[1]}
        ),
        st.builds(obj, st.dictionaries(KEYS, children, min_size=1, max_size=3), st.integers(0, 3)),
        st.lists(children, min_size=2, max_size=2).map(lambda xs: {"anyOf": xs}),
    )


SCHEMAS = st.recursive(_leaf(), _extend, max_leaves=4)


def max_bytes(schema: dict[str, Any]) -> int:
    """An upper bound on the bytes of any document the generation grammar allows for ``schema``."""
    if "anyOf" in schema:
        return max(max_bytes(s) for s in schema["anyOf"])
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"])
    if "const" in schema:
        return len(json.dumps(schema["const"]))
    kind = schema["type"]
    if kind == "boolean":
        return 5
    if kind == "null":
        return 4
    if kind == "integer":
        return max(len(str(schema["minimum"])), len(str(schema["maximum"])))
    if kind == "string":
        return 2 + 12 * int(schema.get("maxLength", 5))  # a character may be written as a \\uXXXX\\uXXXX pair
    if kind == "array":
        return 2 + int(schema["maxItems"]) * (max_bytes(schema["items"]) + 2)
    return 2 + sum(len(k) + 6 + max_bytes(v) for k, v in schema["properties"].items())


@HYPOTHESIS
@given(schema=SCHEMAS)
def test_generated_schemas_always_validate(runner: Runner, schema: dict[str, Any]) -> None:
    from jsonschema import validate  # type: ignore[import-untyped]

    constraint = c(schema=schema)
    out = runner.generate("Here is the JSON document:\n", constraint, max_bytes(schema) + 1)
    validate(json.loads(out.text), schema)
    check_output(constraint, out.text)


def _regex_atoms() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["[a-z]", "[0-9]", "[A-Z]", "[aeiou]", "x", "-", " ", r"\.", "ab", "(cat|dog)"]),
    )


REGEXES = st.lists(
    st.tuples(_regex_atoms(), st.sampled_from(["", "?", "{1,3}", "{2}", "{0,2}"])).map(lambda t: t[0] + t[1]),
    min_size=1,
    max_size=4,
).map("".join)


@HYPOTHESIS
@given(pattern=REGEXES)
def test_generated_regexes_fullmatch(runner: Runner, pattern: str) -> None:
    constraint = c(regex=pattern)
    out = runner.generate("Code: ", constraint, 4 * len(pattern) + 1)
    assert re.fullmatch(pattern, out.text), (pattern, out.text)


CHOICES = st.lists(
    st.text(alphabet=string.ascii_letters + " -'é", min_size=1, max_size=8), min_size=1, max_size=4, unique=True
)


@HYPOTHESIS
@given(choices=CHOICES)
def test_generated_choices_pick_one(runner: Runner, choices: list[str]) -> None:
    constraint = c(choices=choices)
    out = runner.generate("Answer:", constraint, max(len(x.encode()) for x in choices) + 1)
    assert out.text in choices
