"""Every structured example of the original documentation, at its documented token budget, on the embedded model,
returns valid, parseable output (issue 11: before the budget rule, the Person examples raised ConstraintError)."""

import json
import re

import pytest
from reference.structured_examples import REQUESTS

import steadytext_async as st
from steadytext_async.structured import check_output, normalize, parse


@pytest.mark.parametrize(("name", "prompt", "kwargs", "budget"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_structured_example_is_valid_at_its_documented_budget(
    name: str, prompt: str, kwargs: dict[str, object], budget: int
) -> None:
    text = st.generate(prompt, max_new_tokens=budget, **kwargs)
    assert isinstance(text, st.GeneratedText)
    result = text.result
    # "length": complete and valid, but open-ended (a number the model kept extending up to the budget)
    assert result.finish_reason in ("constraint_complete", "constraint_forced", "length")
    assert result.usage.completion_tokens <= budget
    constraint = normalize(**kwargs)
    assert constraint is not None
    check_output(constraint, text)
    if "schema" in kwargs:
        json.loads(text)
        parse(kwargs["schema"], text)
    elif "regex" in kwargs:
        assert re.fullmatch(str(kwargs["regex"]), text)
    else:
        assert text in constraint.choices
