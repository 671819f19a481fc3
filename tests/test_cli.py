"""The command line: generate (argument, stdin, --stream, --json), models, python -m."""

import json
import subprocess
import sys

import steadytext_async as st

CLI = [sys.executable, "-m", "steadytext_async"]


def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, text=True, timeout=120, check=check)


def test_generate_argument_stdin_and_stream_agree() -> None:
    expected = st.generate("Hello", max_new_tokens=8)
    assert run("generate", "Hello", "--max-new-tokens", "8").stdout == f"{expected}\n"
    assert run("generate", "--max-new-tokens", "8", stdin="Hello").stdout == f"{expected}\n"
    assert run("generate", "Hello", "--max-new-tokens", "8", "--stream").stdout == f"{expected}\n"


def test_generate_json_has_text_and_metadata() -> None:
    out = json.loads(run("generate", "Hello", "--max-new-tokens", "4", "--json", "--logprobs").stdout)
    assert out["text"] == st.generate("Hello", max_new_tokens=4)
    assert out["finish_reason"] == "length" and out["fallback"] is False
    assert len(out["logprobs"]) == 4
    assert out["fingerprint"]["model_sha256"] == st.REGISTRY["smollm2-135m-instruct"].sha256


def test_seed_and_temperature_flags() -> None:
    a = run("generate", "Hello", "--max-new-tokens", "8", "--temperature", "0.8", "--seed", "1").stdout
    b = run("generate", "Hello", "--max-new-tokens", "8", "--temperature", "0.8", "--seed", "1").stdout
    assert a == b == f"{st.generate('Hello', max_new_tokens=8, temperature=0.8, seed=1)}\n"


def test_bad_input_exits_nonzero_with_message() -> None:
    r = run("generate", "Hello", "--max-new-tokens", "0", check=False)
    assert r.returncode == 2 and "max_new_tokens must be >= 1" in r.stderr


def test_models_lists_registry() -> None:
    rows = json.loads(run("models").stdout)
    names = {r["name"]: r for r in rows}
    assert set(names) >= {"smollm2-135m-instruct", "gemma-3-270m", "gemma-3-1b-it", "gemma-3-4b-it"}
    assert names["smollm2-135m-instruct"]["status"].startswith("installed at")
    assert names["smollm2-135m-instruct"]["status"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf (default)")
    assert names["smollm2-135m-instruct"]["size"] == "mini"
    assert names["gemma-3-270m"]["status"].startswith(("assembled at", "embedded (assembled on first use)"))
    assert "(default)" not in names["gemma-3-270m"]["status"]
    assert names["gemma-3-1b-it"]["status"].startswith("not downloaded")
