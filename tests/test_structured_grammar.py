"""Generation is narrower than validation: a regex's ``\\d`` generates ASCII digits only."""

import re

import pytest

import steadytext_async as st
from steadytext_async.structured.grammar import ascii_digits

PHONE = r"\d{3}-\d{3}-\d{4}"


@pytest.mark.parametrize(
    ("pattern", "narrowed"),
    [
        (PHONE, "[0-9]{3}-[0-9]{3}-[0-9]{4}"),
        (r"a\.\d+", r"a\.[0-9]+"),
        (r"\\d", r"\\d"),  # an escaped backslash, then a literal d
        (r"[\d]", r"[\d]"),  # inside a class: kept
        (r"[^\d]x\d", r"[^\d]x[0-9]"),  # narrowing inside [^...] would widen it
        (r"[]\d]\d", r"[]\d][0-9]"),  # a ']' first in a class is a literal
        (r"[a[b]\d]\d", r"[a[b]\d][0-9]"),  # nested classes
        (r"\D\w\s", r"\D\w\s"),
    ],
)
def test_ascii_digits(pattern: str, narrowed: str) -> None:
    assert ascii_digits(pattern) == narrowed
    for sample in ("555-123-4567", "a.12", "x", "7"):  # a subset of the original language, never wider
        if re.fullmatch(narrowed, sample):
            assert re.fullmatch(pattern, sample)


def test_a_phone_number_is_written_in_ascii_digits() -> None:
    """SmolLM2 asked 'My phone is' under ``\\d`` wrote U+1FBF8 'segmented digit eight's (valid for Python's ``\\d``)."""
    text = st.generate("My phone is", regex=PHONE, max_new_tokens=24)
    assert re.fullmatch(r"[0-9]{3}-[0-9]{3}-[0-9]{4}", text), repr(text)


def test_a_regex_python_warns_about_is_accepted_without_a_warning() -> None:
    """Python's ``re`` emits FutureWarning ("possible nested set") for ``[[`` in a class; the syntax check must not
    turn a valid pattern into a warning (an error under ``-W error``) for the caller."""
    import warnings

    from steadytext_async.structured.normalize import normalize

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        constraint = normalize(regex="[[a]b]x")
    assert constraint is not None and constraint.pattern == "[[a]b]x"
