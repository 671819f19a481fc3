"""Which local models a request may make this server load, decided before anything resolves or downloads.

A request names models, it never brings them: model files and caller-named Hub repos are refused outright; a
registry name or size is served when its model is embedded, already on this host (the Hugging Face cache), or the
server was started with ``--allow-download`` (the operator's consent to fetch registry models, as ``verify``
needs). The server's own default model is the operator's choice and always allowed.
"""

from __future__ import annotations

from .._modelref import ModelRef
from .._registry import REGISTRY, SIZES, RegistryEntry
from ._errors import HTTPError

__all__ = ["check_model"]


def _present(entry: RegistryEntry) -> bool:
    """True when the entry's file is embedded or already in the local Hugging Face cache (no network)."""
    if entry.repo is None:
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id=entry.repo, filename=entry.filename), str)
    except Exception:  # an unreadable cache counts as absent
        return False


def check_model(ref: ModelRef, *, allow_download: bool) -> None:
    """Raise a 403 :class:`HTTPError` unless this server may load the local model ``ref`` names."""
    if ref.kind in ("remote", "default"):
        return  # remote: the router's unsafe gate (and --allow-remote); default: the operator's configuration
    if ref.kind in ("hub", "file"):
        raise HTTPError(
            403,
            "this server does not load model files or Hub repositories named by a request",
            type="permission_error",
            code="model_refused",
        )
    entry = (REGISTRY if ref.kind == "registry" else SIZES).get(ref.name or "")
    if entry is None:
        return  # unknown: validation answers 404
    if not allow_download and not _present(entry):
        raise HTTPError(
            403,
            f"model {entry.name!r} is not on this host and the server was started without --allow-download",
            type="permission_error",
            code="model_not_downloaded",
        )
