"""Frozen settings. Environment variables are read here and only here.

| variable                  | meaning                                                          | default            |
|---------------------------|------------------------------------------------------------------|--------------------|
| STEADYTEXT_SIZE           | default model size: mini, small, large                           | mini               |
| STEADYTEXT_MODEL_PATH     | a local .gguf used when no model/size/repo is given              | (unset)            |
| STEADYTEXT_MODEL_DIR      | where the embedded model is assembled                            | user cache dir     |
| STEADYTEXT_WORKERS        | local worker processes                                           | usable cores       |
| STEADYTEXT_THREADS        | decode threads shared by all concurrently decoding workers      | usable cores       |
| STEADYTEXT_N_CTX          | context window (prompt + generated tokens)                       | 4096               |
| STEADYTEXT_N_BATCH        | prompt-evaluation batch size (part of the determinism contract) | 512                |
| STEADYTEXT_STRICT         | 1: raise ModelUnavailableError instead of falling back           | 0                  |
| STEADYTEXT_LLAMA_LOG      | 1: let llama.cpp write its log to stderr                         | 0                  |
| STEADYTEXT_START_TIMEOUT  | seconds a worker may take to load its model                      | 120                |
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from ._exceptions import InvalidRequestError

__all__ = ["Settings", "usable_cores"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _default_model_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("steadytext-async")) / "models"


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequestError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequestError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise InvalidRequestError(f"{name}={value} must be >= {minimum}")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Process-level configuration of a client. Build with :meth:`from_env` or directly."""

    size: str = "mini"
    model_path: str | None = None
    model_dir: Path = dataclasses.field(default_factory=_default_model_dir)
    workers: int = dataclasses.field(default_factory=usable_cores)
    threads: int = dataclasses.field(default_factory=usable_cores)
    n_ctx: int = 4096
    n_batch: int = 512
    strict: bool = False
    llama_log: bool = False
    start_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in ("workers", "threads", "n_ctx", "n_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"{name} must be a positive int, got {value!r}")
        if self.n_ctx < 16:
            raise InvalidRequestError(f"n_ctx must be >= 16, got {self.n_ctx}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``STEADYTEXT_*`` variables; keyword overrides win over the environment."""
        e = os.environ if env is None else env
        cores = usable_cores()
        values: dict[str, object] = {
            "size": e.get("STEADYTEXT_SIZE", "mini").strip() or "mini",
            "model_path": e.get("STEADYTEXT_MODEL_PATH") or None,
            "model_dir": Path(e["STEADYTEXT_MODEL_DIR"]) if e.get("STEADYTEXT_MODEL_DIR") else _default_model_dir(),
            "workers": _env_int(e, "STEADYTEXT_WORKERS", cores),
            "threads": _env_int(e, "STEADYTEXT_THREADS", cores),
            "n_ctx": _env_int(e, "STEADYTEXT_N_CTX", 4096, minimum=16),
            "n_batch": _env_int(e, "STEADYTEXT_N_BATCH", 512),
            "strict": _env_bool(e, "STEADYTEXT_STRICT", False),
            "llama_log": _env_bool(e, "STEADYTEXT_LLAMA_LOG", False),
            "start_timeout": float(_env_int(e, "STEADYTEXT_START_TIMEOUT", 120)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
