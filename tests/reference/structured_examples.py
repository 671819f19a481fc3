"""The structured-output examples of the original SteadyText's documentation, with their documented token budgets.

Sources: the reference text-generation API document (``choices`` with ``model="openai:gpt-4o-mini"``, run here on
the embedded model), the original ``generate()`` docstring (schema, ``return_pydantic``, regex, choices), the
docstrings of its structured helpers (``generate_json``/``regex``/``choice``/``format``/``pydantic``, all
``max_tokens=512``) and issue 11's first example (``max_new_tokens=128``). Budgets left unsaid are the default 512.

Each example is written in its ``generate()`` form; ``generate_json(p, s)`` is ``generate(p, schema=s,
max_new_tokens=512)`` and so on (``tests/test_compat.py`` checks that the helpers give the same bytes).
Examples that are the same request (``generate(schema=Person)`` and ``generate_json(Person)``) are listed once.
"""

from __future__ import annotations

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
