"""The structured-output examples of the original SteadyText's documentation, with their documented token budgets.

Sources: the reference text-generation API document (``choices`` with ``model="openai:gpt-4o-mini"``, run here on
the embedded model), the original ``generate()`` docstring (schema, ``return_pydantic``, regex, choices), the
docstrings of its structured helpers (``generate_json``/``regex``/``choice``/``format``/``pydantic``, all
``max_tokens=512``) and issue 11's first example (``max_new_tokens=128``). Budgets left unsaid are the default 512.

Each example is ``(name, call)``; ``call(steadytext)`` runs it against a module with the original API (this
package, imported as in a migration) and returns the text to check plus the constraint it must satisfy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel


class Person(BaseModel):
    name: str
    age: int


class User(BaseModel):
    name: str
    age: int


PHONE = r"\d{3}-\d{3}-\d{4}"
EMAIL = r"[a-z]+@[a-z]+\.[a-z]+"
NAME_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}

# (name, prompt, constraint keywords, max_new_tokens): the generate() form of every example
REQUESTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("reference: choices sentiment", "Classify sentiment", {"choices": ["positive", "negative", "neutral"]}, 512),
    ("generate: schema Person", "Create a person", {"schema": Person}, 512),
    ("generate: regex phone", "My phone is", {"regex": PHONE}, 512),
    ("generate: choices", "Is Python good?", {"choices": ["yes", "no", "maybe"]}, 512),
    ("generate_json: dict schema", "Create a person", {"schema": NAME_SCHEMA}, 512),
    ("generate_json: int", "Pick a number", {"schema": int}, 512),
    ("generate_regex: phone", "Call me at", {"regex": PHONE}, 512),
    ("generate_regex: email", "Email:", {"regex": EMAIL}, 512),
    ("generate_format: int", "How many?", {"schema": int}, 512),
    ("generate_format: bool", "True or false?", {"schema": bool}, 512),
    ("generate_pydantic: User", "Create user Alice age 30", {"schema": User}, 512),
    ("issue 11: Person at 128", "Create a person", {"schema": Person}, 128),
]


def _helpers(st: Any) -> list[tuple[str, Callable[[], Any], dict[str, Any]]]:
    """The same examples written as the original documentation writes them (compatibility names)."""
    return [
        (
            "reference: choices sentiment",
            lambda: st.generate("Classify sentiment", choices=["positive", "negative", "neutral"]),
            {"choices": ["positive", "negative", "neutral"]},
        ),
        ("generate: schema Person", lambda: st.generate("Create a person", schema=Person), {"schema": Person}),
        (
            "generate: return_pydantic",
            lambda: st.generate("Create a person", schema=Person, return_pydantic=True),
            {"schema": Person},
        ),
        ("generate: regex phone", lambda: st.generate("My phone is", regex=PHONE), {"regex": PHONE}),
        (
            "generate: choices",
            lambda: st.generate("Is Python good?", choices=["yes", "no", "maybe"]),
            {"choices": ["yes", "no", "maybe"]},
        ),
        (
            "generate_json: dict schema",
            lambda: st.generate_json("Create a person", NAME_SCHEMA),
            {"schema": NAME_SCHEMA},
        ),
        ("generate_json: Person", lambda: st.generate_json("Create a person", Person), {"schema": Person}),
        ("generate_json: int", lambda: st.generate_json("Pick a number", int), {"schema": int}),
        ("generate_regex: phone", lambda: st.generate_regex("Call me at", PHONE), {"regex": PHONE}),
        ("generate_regex: email", lambda: st.generate_regex("Email:", EMAIL), {"regex": EMAIL}),
        (
            "generate_choice",
            lambda: st.generate_choice("Is Python good?", ["yes", "no", "maybe"]),
            {"choices": ["yes", "no", "maybe"]},
        ),
        ("generate_format: int", lambda: st.generate_format("How many?", int), {"schema": int}),
        ("generate_format: bool", lambda: st.generate_format("True or false?", bool), {"schema": bool}),
        ("generate_pydantic", lambda: st.generate_pydantic("Create user Alice age 30", User), {"schema": User}),
        (
            "issue 11: Person at 128",
            lambda: st.generate("Create a person", schema=Person, max_new_tokens=128),
            {"schema": Person},
        ),
    ]


def helper_examples(st: Any) -> list[tuple[str, Callable[[], Any], dict[str, Any]]]:
    return _helpers(st)
