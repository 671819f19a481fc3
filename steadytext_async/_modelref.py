"""ModelRef: what a request's model selectors name, decided once (no I/O).

``model``, ``model_repo``/``model_filename`` and ``size`` together name one of: a remote model
(``provider:model_id``), a Hugging Face Hub file, a local ``.gguf`` file, a registry name, a registry size, or the
configured default. Validation (:mod:`._registry`), routing (:mod:`._router`), resolution and the client all read
this one answer instead of each testing the strings again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Literal

__all__ = ["PROVIDER_NAME", "ModelRef", "parse_model", "split_remote_model"]

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]+")  # a remote provider's name (presets, register_provider)

Kind = Literal["remote", "hub", "file", "registry", "size", "default"]


@dataclasses.dataclass(frozen=True, slots=True)
class ModelRef:
    kind: Kind
    name: str | None = None  # remote: model id; hub: filename; file: path; registry: name; size: size
    provider: str | None = None  # remote: provider name
    repo: str | None = None  # hub: repository

    @property
    def remote(self) -> bool:
        return self.kind == "remote"


def split_remote_model(model: str) -> tuple[str, str] | None:
    """``"provider:model_id"`` -> ``(provider, model_id)``; None when ``model`` is not shaped like a remote id.

    The provider part is a lowercase name of two or more characters (so ``C:\\m.gguf`` stays local); the model id
    may contain ``/`` and ``:`` (``openrouter:meta-llama/llama-3-8b``, ``ollama:llama3:8b``).
    """
    prefix, sep, model_id = model.partition(":")
    if not sep or not PROVIDER_NAME.fullmatch(prefix) or model.endswith(".gguf"):
        return None
    return prefix, model_id


def _is_path(model: str) -> bool:
    return model.endswith(".gguf") or os.sep in model


@functools.lru_cache(maxsize=1024)
def parse_model(
    model: str | None, model_repo: str | None = None, model_filename: str | None = None, size: str | None = None
) -> ModelRef:
    """The one reading of the selectors (precedence: remote, hub, file, registry name, size, default).

    ``provider:model_id`` is remote (the id may hold ``/`` and ``:``, e.g. ``openrouter:meta-llama/llama-3-8b``);
    other strings with ``:`` are remote too unless they look like a path (``C:\\m.gguf``, ``./a:b.gguf``).
    """
    if model is not None:
        split = split_remote_model(model)
        if split is None and ":" in model and not _is_path(model):
            split = model.partition(":")[0], model.partition(":")[2]
        if split is not None:
            return ModelRef("remote", name=split[1], provider=split[0])
    if model_repo is not None and model_filename is not None:
        return ModelRef("hub", name=model_filename, repo=model_repo)
    if model is not None:
        return ModelRef("file" if _is_path(model) else "registry", name=model)
    if size is not None:
        return ModelRef("size", name=size)
    return ModelRef("default")
