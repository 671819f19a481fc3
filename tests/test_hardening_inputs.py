"""Regression tests for the local side of the hardening issue: inputs that escaped as foreign errors or did work
before failing, the worker's import path, linear-time regex checks, and small API fixes.

Each test fails on the code before the fix (the comment on each says what happened then).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import steadytext_async as st
from steadytext_async import AsyncSteadyText, ConstraintError, InvalidRequestError
from steadytext_async._config import Settings
from steadytext_async._replay import request_from_fingerprint
from steadytext_async._validate import build_request
from steadytext_async._worker.protocol import MAX_FRAME, MAX_PROMPT_BYTES, Generate, GenParams, encode_frame
from steadytext_async.structured.normalize import MAX_SCHEMA_DEPTH, normalize
from steadytext_async.structured.validate import check_output, regex_fullmatch

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

CLI = [sys.executable, "-m", "steadytext_async"]


# -- 6. errors that were not ours -------------------------------------------------------------------------------


def test_cyclic_schema_is_an_invalid_request() -> None:
    # Before: RecursionError.
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    schema["properties"]["self"] = schema
    with pytest.raises(InvalidRequestError, match="contains itself"):
        normalize(schema=schema)
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(InvalidRequestError):
        normalize(schema={"enum": looped})


def test_schema_nested_3000_deep_is_an_invalid_request() -> None:
    # Before: RecursionError.
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(3000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidRequestError, match="deeper than"):
        normalize(schema=schema)
    ok: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH // 2 - 1):
        ok = {"type": "array", "items": ok}
    assert normalize(schema=ok) is not None


@pytest.mark.parametrize("field", ["prompt", "eos_string", "regex", "choices", "schema"])
def test_lone_surrogates_are_an_invalid_request(field: str) -> None:
    # Before: UnicodeEncodeError from the cache key, or a WorkerError once the prompt reached a worker.
    bad = "ab\ud800cd"
    by_field: dict[str, dict[str, Any]] = {
        "prompt": {},
        "eos_string": {"eos_string": bad},
        "regex": {"regex": bad},
        "choices": {"choices": ["ok", bad]},
        "schema": {"schema": {"type": "string", "enum": [bad]}},
    }
    with pytest.raises(InvalidRequestError, match="not valid Unicode"):
        build_request(bad if field == "prompt" else "p", **by_field[field])


async def test_lone_surrogate_prompt_through_the_client_starts_no_worker() -> None:
    async with AsyncSteadyText() as client:
        with pytest.raises(InvalidRequestError, match="not valid Unicode"):
            await client.generate("x\udfffy", max_new_tokens=4)
        assert client.worker_pids() == []


def test_recorded_constraint_without_kind_is_an_invalid_request() -> None:
    # Before: KeyError: 'kind'.
    fp = st.Fingerprint(
        package_version=st.__version__, provider="local", model="gemma-3-270m", prompt="p", max_new_tokens=4,
        eos_string="[EOS]", temperature=0.0, seed=42, top_k=None, top_p=None, min_p=None, logprobs=False,
        output_sha256="0" * 64, constraint='{"pattern":"a+"}',
    )  # fmt: skip
    with pytest.raises(InvalidRequestError, match="kind"):
        request_from_fingerprint(fp)
    for bad in ('{"kind":"regex","pattern":"(a"}', "not json", '{"kind":"choices","choices":["a","a"]}'):
        with pytest.raises(InvalidRequestError):
            request_from_fingerprint(fp.model_copy(update={"constraint": bad}))
    good = request_from_fingerprint(fp.model_copy(update={"constraint": '{"kind":"regex","pattern":"a+"}'}))
    assert good.constraint is not None and good.constraint.pattern == "a+"


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff\xfe garbage", b"not json at all", b"[1, 2, 3]", b'{"fingerprint": 5}', b"[" * 100_000, b""],
)
def test_verify_bad_input_exits_2_without_traceback(content: bytes, tmp_path: Path) -> None:
    # Before: a traceback and exit code 1, which is the documented "outputs differ" code.
    path = tmp_path / "garbage.json"
    path.write_bytes(content)
    r = subprocess.run([*CLI, "verify", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("steadytext-async: error:")
    missing = subprocess.run([*CLI, "verify", str(tmp_path / "nope.json")], capture_output=True, text=True)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


# -- 7. limits skipped on one path ------------------------------------------------------------------------------


async def test_fallback_path_honours_the_max_new_tokens_limit() -> None:
    # Before: size="small" is not downloadable offline, so the fallback ran 200,000 words on the runtime loop.
    async with AsyncSteadyText() as client:
        with pytest.raises(InvalidRequestError, match="max_new_tokens=200000"):
            await client.generate("x", size="small", max_new_tokens=200_000)
        small = await client.generate("x", size="small", max_new_tokens=5)
    assert small.fallback and small.usage.completion_tokens == 5


async def test_prompt_over_the_frame_limit_is_refused_before_any_work() -> None:
    # Before: a 70 MB prompt killed two workers (the reader refused the frame) before the error surfaced.
    huge = "a" * (MAX_PROMPT_BYTES + 1)
    with pytest.raises(InvalidRequestError, match="frame limit"):
        build_request(huge)
    async with AsyncSteadyText() as client:
        with pytest.raises(InvalidRequestError, match="frame limit"):
            await client.generate(huge, max_new_tokens=2)
        assert client.worker_pids() == []
    build_request("é" * (MAX_PROMPT_BYTES // 4))  # the byte count, not the character count, is limited


def test_sender_checks_the_frame_limit() -> None:
    with pytest.raises(InvalidRequestError, match="exceeds"):
        encode_frame(Generate(1, GenParams(prompt="x" * (MAX_FRAME + 1), max_new_tokens=2)))
    assert len(encode_frame(Generate(1, GenParams(prompt="x", max_new_tokens=2)))) < 400


def test_choices_duplicate_detection_is_linear() -> None:
    # Before: ``choices.count(c)`` for every choice: 20,000 choices took 4.6 s.
    class NoCount(list[str]):
        def count(self, value: object) -> int:
            raise AssertionError("quadratic duplicate detection")

    choices = NoCount(f"choice-{i}" for i in range(20_000))
    constraint = normalize(choices=choices)
    assert constraint is not None and len(constraint.choices) == 20_000
    with pytest.raises(InvalidRequestError, match=r"repeated: \['a', 'b'\]"):
        normalize(choices=NoCount(["b", "a", "b", "c", "a"]))


# -- 3. regex validation in linear time ---------------------------------------------------------------------------


def test_catastrophic_regex_is_checked_in_linear_time() -> None:
    # Before: re.fullmatch took 1.6 s at 25 characters, doubling per character (hours at 36), holding the GIL.
    code = textwrap.dedent(
        """
        from steadytext_async.structured import normalize
        from steadytext_async.structured.validate import check_output
        from steadytext_async import ConstraintError
        c = normalize(regex=r"(a+)+")
        try:
            check_output(c, "a" * 36 + "!")
        except ConstraintError:
            print("rejected")
        check_output(c, "a" * 100_000)
        print("accepted")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["rejected", "accepted"]


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"[0-9]{3}-[0-9]{4}", "555-1234"), (r"[0-9]{3}-[0-9]{4}", "555-12345"), (r"\d+", "٣٤"),
        (r"(yes|no)", "yes"), (r"(yes|no)", "yesno"), (r"a.c", "a\nc"), (r"a.c", "abc"), (r"\w+", "héllo wörld"),
        (r"\w+", "héllo"), (r"[A-Z][a-z]*( [A-Z][a-z]*)*", "Hello World"), (r"x*", ""), (r"\s+", " \t\n"),
        (r"(a|b)*c", "ababc"), (r"(?i)abc", "ABC"), (r"[^,]+(,[^,]+)*", "a,b,,c"), (r"\.json", ".json"),
    ],
)  # fmt: skip
def test_regex_check_agrees_with_re_on_valid_patterns(pattern: str, text: str) -> None:
    assert regex_fullmatch(pattern, text) == (re.fullmatch(pattern, text) is not None)
    constraint = normalize(regex=pattern)
    assert constraint is not None
    if re.fullmatch(pattern, text):
        check_output(constraint, text)
    else:
        with pytest.raises(ConstraintError):
            check_output(constraint, text)


# -- 2. workers do not import from the current directory ---------------------------------------------------------


def test_worker_ignores_a_planted_module_in_the_cwd(tmp_path: Path) -> None:
    # Before: workers ran as ``python -m``, which puts the cwd first on sys.path: the planted module ran inside.
    marker = tmp_path / "PWNED"
    (tmp_path / "llama_cpp.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit(7)\n")
    code = textwrap.dedent(
        """
        import json, steadytext_async as st
        with st.SteadyText(workers=1, threads=1, strict=True) as c:
            r = c.generate("Once upon a time", max_new_tokens=4)
        print(json.dumps([r.text, r.fallback]))
        """
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert not marker.exists(), "the planted llama_cpp.py ran inside a worker"
    assert out.returncode == 0, out.stderr[-2000:]
    text, fallback = json.loads(out.stdout)
    assert text == st.generate("Once upon a time", max_new_tokens=4) and fallback is False


# -- 9. small ------------------------------------------------------------------------------------------------------


async def test_cache_dir_and_model_dir_accept_str(tmp_path: Path) -> None:
    # Before: TypeError (str is not converted to Path).
    async with AsyncSteadyText(cache_dir=str(tmp_path / "c"), model_dir=str(tmp_path / "m")) as client:
        assert client.settings.cache_dir == tmp_path / "c" and isinstance(client.settings.model_dir, Path)
    assert Settings(cache_dir=str(tmp_path)).cache_dir == tmp_path  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="cache_dir"):
        Settings(cache_dir=5)  # type: ignore[arg-type]


def test_cli_generate_with_undecodable_stdin_exits_2() -> None:
    r = subprocess.run([*CLI, "generate"], input=b"\xff\xfe bytes", capture_output=True, timeout=120)
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    assert b"not valid Unicode" in r.stderr or b"not UTF-8" in r.stderr
