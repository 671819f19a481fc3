"""Fingerprints and replay: every result says what decided its bytes, and can be re-run to prove it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import steadytext_async as st
from steadytext_async._cache.key import cache_key
from steadytext_async._registry import EMBEDDED
from steadytext_async._replay import request_from_fingerprint

pytestmark = pytest.mark.model  # drives worker processes (see conftest: one asyncio loop)

# sha256 of the chat template in the SmolLM2-135M-Instruct GGUF (ChatML with a default system line)
SMOLLM2_TEMPLATE_SHA256 = "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788"

CLI = [sys.executable, "-m", "steadytext_async"]


def test_facade_exports_resolve() -> None:
    """Every export resolves to a steadytext_async object, and the three lists that name the exports agree:
    ``__all__``, the lazy-import table and the ``TYPE_CHECKING`` imports type checkers read."""
    import ast
    import inspect

    assert st.__all__ == sorted(st.__all__, key=lambda n: (not n.isupper(), n))
    assert set(st.__all__) == set(st._LAZY)
    tree = ast.parse(inspect.getsource(st))
    guarded = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    typed = {a.asname or a.name for n in guarded.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert typed == set(st.__all__)
    for name in st.__all__:
        value = getattr(st, name)
        module = getattr(value, "__module__", None)
        if module is not None and (inspect.isclass(value) or inspect.isfunction(value)):
            assert module.startswith("steadytext_async"), (name, module)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = st.nope


async def test_local_fingerprint_fields() -> None:
    r = await st.default_client().generate("Once upon a time", max_new_tokens=6, temperature=0.5, seed=9)
    fp = r.fingerprint
    assert fp.prompt == "Once upon a time" and fp.max_new_tokens == 6 and fp.temperature == 0.5 and fp.seed == 9
    assert (fp.top_k, fp.top_p, fp.min_p) == (40, 0.95, 0.05)
    assert fp.provider == "local" and fp.model == EMBEDDED.name and fp.model_sha256 == EMBEDDED.sha256
    assert fp.package_version == st.__version__ and fp.llama_cpp_python_version == "0.3.36"
    assert fp.llama_cpp_system_info and fp.cpu and fp.n_ctx == 4096 and fp.n_batch == fp.n_ubatch == 512
    assert fp.prompt_format == "chat" and fp.fallback is False and fp.constraint is None
    assert fp.chat_template_sha256 == SMOLLM2_TEMPLATE_SHA256 and fp.messages is None
    assert fp.inputs_sha256 is not None and len(fp.inputs_sha256) == 64
    assert json.loads(fp.to_json()) == fp.model_dump(mode="json")
    assert fp.to_json() == st.Fingerprint.model_validate_json(fp.to_json()).to_json()  # stable round trip


async def test_fingerprint_and_cache_key_agree() -> None:
    client = st.default_client()
    a = await client.generate("Key check", max_new_tokens=4)
    b = await client.generate("Key check", max_new_tokens=4, strict=True)  # strict cannot change bytes
    c = await client.generate("Key check", max_new_tokens=5)
    assert a.fingerprint.inputs_sha256 == b.fingerprint.inputs_sha256 != c.fingerprint.inputs_sha256
    request = request_from_fingerprint(a.fingerprint)
    spec = st.ModelSpec(name=EMBEDDED.name, sha256=a.fingerprint.model_sha256, prompt_format="chat")
    assert cache_key(request, spec, runtime={"n_ctx": 4096, "n_batch": 512}) == a.fingerprint.inputs_sha256


async def test_a_conversation_is_recorded_and_replayed() -> None:
    conv = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of the sky?"}]
    r = await st.default_client().generate(messages=conv, max_new_tokens=6)
    fp = r.fingerprint
    assert fp.prompt is None and fp.messages is not None and [m.wire() for m in fp.messages] == conv
    report = await st.default_client().replay(json.loads(r.model_dump_json()))
    assert report.identical and report.differences == []
    assert request_from_fingerprint(fp).messages == tuple(fp.messages)


async def test_constrained_fingerprint_records_the_constraint() -> None:
    r = await st.default_client().generate("Answer:", choices=["yes", "no"], max_new_tokens=4)
    assert r.text in ("yes", "no")
    assert r.fingerprint.constraint is not None and json.loads(r.fingerprint.constraint)["kind"] == "choices"
    report = await st.default_client().replay(r)
    assert report.identical and report.differences == []


async def test_fallback_fingerprint_and_no_replay() -> None:
    r = await st.default_client().generate("x", size="small", max_new_tokens=3)
    assert r.fallback and r.fingerprint.fallback and r.fingerprint.inputs_sha256 is None
    with pytest.raises(st.InvalidRequestError, match="fallback"):
        await st.default_client().replay(r)


async def test_replay_identical_and_edited_fields_reported() -> None:
    client = st.default_client()
    r = await client.generate("Once upon a time", max_new_tokens=10, temperature=0.7, seed=3)
    report = await client.replay(r.model_dump_json())
    assert report.identical and report.differences == [] and not report.inputs_edited

    edited = json.loads(r.model_dump_json())
    edited["fingerprint"]["n_batch"] = 256  # recorded in another environment
    report = await client.replay(edited)
    assert report.identical
    assert [(d.field, d.recorded, d.current) for d in report.differences if d.field == "n_batch"] == [
        ("n_batch", 256, 512)
    ]
    assert "n_batch: 256 -> 512" in report.summary()

    edited = json.loads(r.model_dump_json())
    edited["fingerprint"]["seed"] = 4  # an input changed after recording
    report = await client.replay(edited)
    assert not report.identical and report.inputs_edited
    assert report.first_difference is not None and "DIFFERENT" in report.summary()


def test_cli_generate_json_then_verify_in_fresh_processes(tmp_path: Path) -> None:
    out = subprocess.run(
        [*CLI, "generate", "Once upon a time", "--max-new-tokens", "8", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    recording = tmp_path / "r.json"
    recording.write_text(out)
    ok = subprocess.run([*CLI, "verify", str(recording)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("identical")
    data = json.loads(out)
    data["fingerprint"]["max_new_tokens"] = 9
    recording.write_text(json.dumps(data))
    bad = subprocess.run([*CLI, "verify", str(recording)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert "DIFFERENT output bytes" in bad.stdout and "edited after recording" in bad.stdout
