"""The cache key changes with every output-affecting input and with nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from steadytext_async._cache.key import IGNORED_REQUEST_FIELDS, cache_key
from steadytext_async._models import GenerationRequest, ModelSpec, SamplingParams

SHA = "a" * 64
LOCAL = ModelSpec(name="gemma-mini", path="/models/gemma.gguf", sha256=SHA, prompt_format="raw")
REQ = GenerationRequest(prompt="Once upon a time")
BASE = cache_key(REQ, LOCAL)


def _req(**changes: Any) -> GenerationRequest:
    return REQ.model_copy(update=changes)


def _sampling(**changes: Any) -> GenerationRequest:
    return _req(sampling=REQ.sampling.model_copy(update=changes))


@pytest.mark.parametrize(
    "request_",
    [
        _req(prompt="Once upon a time."),
        _req(prompt="once upon a time"),
        _req(max_new_tokens=511),
        _req(eos_string="END"),
        _req(logprobs=True),
        _sampling(seed=43),
        _sampling(temperature=0.7),
        _sampling(top_k=41),
        _sampling(top_p=0.9),
        _sampling(min_p=0.1),
    ],
    ids=lambda r: "changed",
)
def test_output_affecting_request_fields_change_the_key(request_: GenerationRequest) -> None:
    assert cache_key(request_, LOCAL) != BASE


def test_top_logprobs_changes_the_key_only_with_logprobs() -> None:
    with_lp = _req(logprobs=True)
    assert cache_key(with_lp.model_copy(update={"top_logprobs": 3}), LOCAL) != cache_key(with_lp, LOCAL)
    assert cache_key(_req(top_logprobs=3), LOCAL) == BASE


@pytest.mark.parametrize(
    "spec",
    [
        LOCAL.model_copy(update={"sha256": "b" * 64}),
        LOCAL.model_copy(update={"prompt_format": "chat"}),
    ],
)
def test_model_identity_changes_the_key(spec: ModelSpec) -> None:
    assert cache_key(REQ, spec) != BASE


def test_runtime_settings_change_the_key() -> None:
    assert cache_key(REQ, LOCAL, runtime={"n_ctx": 4096}) != cache_key(REQ, LOCAL, runtime={"n_ctx": 2048})


@pytest.mark.parametrize(
    "request_",
    [
        _req(model="/other/place/gemma.gguf"),
        _req(size="mini"),
        _req(model_repo="org/repo", model_filename="gemma.gguf"),
        _req(unsafe_mode=True),
        _req(strict=True),
        _req(strict=False),
        _sampling(temperature=-0.0),
    ],
    ids=lambda r: "same",
)
def test_inputs_that_cannot_change_bytes_share_the_key(request_: GenerationRequest) -> None:
    assert cache_key(request_, LOCAL) == BASE


def test_model_path_and_name_do_not_change_the_key_of_a_hashed_model() -> None:
    moved = LOCAL.model_copy(update={"path": "/elsewhere/x.gguf", "name": "x.gguf"})
    assert cache_key(REQ, moved) == BASE


def test_ignored_fields_are_exactly_the_selectors_and_switches() -> None:
    assert frozenset({"model", "model_repo", "model_filename", "size", "unsafe_mode", "strict"}) == (
        IGNORED_REQUEST_FIELDS
    )
    assert set(GenerationRequest.model_fields) > IGNORED_REQUEST_FIELDS


def test_remote_identity_is_provider_name_and_base_url() -> None:
    remote = ModelSpec(provider="openai", name="gpt-4o-mini")
    key = cache_key(REQ, remote)
    assert key != BASE
    assert cache_key(REQ, remote.model_copy(update={"name": "gpt-4o"})) != key
    assert cache_key(REQ, remote.model_copy(update={"provider": "other"})) != key
    assert cache_key(REQ, remote.model_copy(update={"base_url": "http://localhost:1/v1"})) != key


def test_key_is_stable_and_hex() -> None:
    again = GenerationRequest(prompt="Once upon a time", sampling=SamplingParams())
    assert cache_key(again, LOCAL.model_copy()) == BASE
    assert len(BASE) == 64 and int(BASE, 16) >= 0


def test_a_key_needs_a_model_identity() -> None:
    from steadytext_async._router import input_key

    assert input_key(REQ, LOCAL, local=True, n_ctx=4096, n_batch=512) is not None
    assert input_key(REQ, ModelSpec(provider="openai", name="gpt-4o-mini"), local=False, n_ctx=1, n_batch=1)
    assert input_key(REQ, ModelSpec(name="x.gguf", path="/x.gguf"), local=True, n_ctx=4096, n_batch=512) is None


def _constrained(**kwargs: Any) -> GenerationRequest:
    from steadytext_async._validate import build_request

    return build_request("Give me JSON", **kwargs)


def test_constraints_change_the_key_and_equivalent_forms_share_it() -> None:
    from pydantic import BaseModel

    class Point(BaseModel):
        x: int

    as_dict = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    keys = {
        "schema_dict": cache_key(_constrained(schema=as_dict), LOCAL),
        "schema_model": cache_key(_constrained(schema=Point), LOCAL),
        "regex_digits": cache_key(_constrained(regex="[0-9]+"), LOCAL),
        "regex_letters": cache_key(_constrained(regex="[a-z]+"), LOCAL),
        "choices": cache_key(_constrained(choices=["yes", "no"]), LOCAL),
        "none": cache_key(_constrained(), LOCAL),
    }
    assert keys["schema_dict"] == keys["schema_model"]
    del keys["schema_model"]
    assert len(set(keys.values())) == len(keys)


def test_long_prompt_keys_stay_exact() -> None:
    long = "word " * 5000
    assert cache_key(_req(prompt=long), LOCAL) == cache_key(_req(prompt=long), LOCAL)
    assert cache_key(_req(prompt=long), LOCAL) != cache_key(_req(prompt=long + "!"), LOCAL)
