"""The cache key: sha256 of a canonical JSON of every input that can change the output bytes.

Included: the whole :class:`GenerationRequest` except the fields in :data:`IGNORED_REQUEST_FIELDS` (so a field added
later is keyed by default), the resolved model identity (a local model's file sha256 and prompt format, never its
path; a remote model's provider, name and base URL), the canonical constraint, output-affecting runtime settings
(``n_ctx``, ``n_batch`` for local models), the package version and :data:`CACHE_FORMAT_VERSION`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .._models import GenerationRequest, ModelSpec
from .._version import __version__

__all__ = [
    "CACHE_FORMAT_VERSION",
    "IGNORED_REQUEST_FIELDS",
    "IGNORED_SPEC_FIELDS",
    "cache_key",
    "scoped_key",
]

CACHE_FORMAT_VERSION = 1

# Model selectors (already resolved into the spec) and switches that cannot change the bytes of a model output.
IGNORED_REQUEST_FIELDS = frozenset({"model", "model_repo", "model_filename", "size", "unsafe_mode", "strict"})
# Where a model file lives, and (once its sha256 is known) what it is called, do not change its output.
IGNORED_SPEC_FIELDS = frozenset({"path"})


def _canonical(value: Any) -> Any:
    """``value`` with -0.0 turned into 0.0 (the same float for every sampler), recursively."""
    if isinstance(value, float):
        return value + 0.0
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


@functools.lru_cache(maxsize=256)
def _model_identity(spec: ModelSpec) -> str:
    model = spec.model_dump(mode="python", exclude=set(IGNORED_SPEC_FIELDS))
    if spec.sha256 is not None:
        model.pop("name", None)  # the same file under another name gives the same bytes
    return json.dumps(_canonical(model), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def cache_key(request: GenerationRequest, spec: ModelSpec, *, runtime: Mapping[str, Any] | None = None) -> str:
    """Hex sha256 identifying the output of ``request`` on ``spec``; ``runtime`` holds output-affecting settings
    that are not part of the request (e.g. ``{"n_ctx": 4096, "n_batch": 512}``). The client computes it once per
    request and passes it down."""
    req = request.model_dump(mode="python")
    for name in IGNORED_REQUEST_FIELDS:
        del req[name]
    if not request.logprobs:
        req["top_logprobs"] = 0  # irrelevant without logprobs
    doc = {
        "v": CACHE_FORMAT_VERSION,
        "pkg": __version__,
        "request": _canonical(req),
        "constraint": None,  # a retired field, kept so that keys stay stable (the request carries the constraint)
        "runtime": _canonical(dict(runtime)) if runtime is not None else None,
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)
    # The model identity is already canonical JSON (memoised per resolved spec).
    blob = f'{blob[:-1]},"model":{_model_identity(spec)}}}'
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def scoped_key(key: str, scope: str | None) -> str:
    """``key`` narrowed to one credential scope, or ``key`` itself when ``scope`` is None.

    Remote providers expose ``cache_scope`` (an HMAC of their API key and preset headers): their entries are
    stored under this key, so a caller with another key never reads them. The fingerprint's ``inputs_sha256``
    stays the unscoped key (it names the inputs, not who asked).
    """
    return key if scope is None else hashlib.sha256(f"{key}\0scope\0{scope}".encode("ascii")).hexdigest()
