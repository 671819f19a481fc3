"""Frozen settings. Environment variables are read here and in :mod:`._env` (its parsers, and the few readers
needed without Settings), and nowhere else. A client reads the environment once, when its settings are made:
:meth:`Settings.from_env` reads the ``STEADYTEXT_*`` settings below, and every Settings keeps a snapshot of the
environment (``environ``) from which API keys, ``STEADYTEXT_<NAME>_BASE_URL`` and the serve token are read.

| variable                  | meaning                                                          | default            |
|---------------------------|------------------------------------------------------------------|--------------------|
| STEADYTEXT_SIZE           | default model size: mini, small, large                           | mini               |
| STEADYTEXT_MODEL_PATH     | a local .gguf used when no model/size/repo is given              | (unset)            |
| STEADYTEXT_MODEL_DIR      | where the embedded model is assembled                            | user cache dir     |
| STEADYTEXT_WORKERS        | local worker processes                                           | usable cores       |
| STEADYTEXT_THREADS        | decode threads shared by all concurrently decoding workers      | usable cores       |
| STEADYTEXT_N_CTX          | context window (prompt + generated tokens)                       | 4096               |
| STEADYTEXT_N_BATCH        | prompt-evaluation batch size (part of the determinism contract) | 512                |
| STEADYTEXT_MAX_BATCH      | requests one worker decodes together (capped by its self-test; 1 = off) | 8          |
| STEADYTEXT_DISPATCH       | spread: an idle worker first; batch: a request joins a decoding batch first | spread  |
| STEADYTEXT_STRICT         | 1: raise ModelUnavailableError instead of falling back           | 0                  |
| STEADYTEXT_LLAMA_LOG      | 1: let llama.cpp write its log to stderr                         | 0                  |
| STEADYTEXT_UNSAFE_MODE    | 1: allow remote (best-effort deterministic) models without unsafe_mode=True | 0      |
| STEADYTEXT_<NAME>_BASE_URL | base URL of remote provider NAME (e.g. STEADYTEXT_OPENAI_BASE_URL) | preset's      |
| STEADYTEXT_START_TIMEOUT  | seconds a worker may take to load its model                      | 120                |
| STEADYTEXT_SPARE_WORKERS  | 1: keep one more worker loaded and idle, to replace a dead one at once | 0            |
| STEADYTEXT_HOST_BUDGET    | 0: no host-wide thread budget (each pool only keeps its own)      | 1                  |
| STEADYTEXT_HOST_THREADS   | decode threads shared by every process of the host               | usable cores       |
| STEADYTEXT_BUDGET_DIR     | directory of the host budget's lock files                        | user cache dir     |
| STEADYTEXT_CACHE_DIR      | directory of the result cache file (results.sqlite3)            | user cache dir     |
| STEADYTEXT_DISABLE_CACHE  | 1: no result cache (every call generates)                        | 0                  |
| STEADYTEXT_CACHE_MAX_ENTRIES | result cache capacity in entries (frecency eviction)          | 50000              |
| STEADYTEXT_CACHE_MAX_BYTES | result cache capacity in stored bytes (frecency eviction)       | 268435456 (256 MiB)|
| STEADYTEXT_CACHE_URL      | redis://… or rediss://…: share the result cache through Redis   | (unset: sqlite)    |
| STEADYTEXT_CACHE_PREFIX   | prefix of every Redis key this cache writes                       | steadytext:        |
| STEADYTEXT_CACHE_TTL      | seconds a Redis entry lives (0: until Redis evicts it)            | 0                  |
| STEADYTEXT_CACHE_SECRET   | shared secret: Redis values carry an HMAC and unsigned ones are misses | (unset)       |
| STEADYTEXT_DAEMON_URL     | local generations go to a running `serve` (http://H:P, unix:///x) | (unset)            |
| STEADYTEXT_SERVE_TOKEN    | bearer token `serve` requires (and the daemon client sends)      | (unset: no auth)   |
| STEADYTEXT_DAEMON_INSECURE | 1: send the token to an http:// daemon on another host anyway   | 0                  |
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from ._env import env_bool, env_int
from ._exceptions import InvalidRequestError

__all__ = ["FAILURE_TTL", "Settings", "redact_url", "usable_cores"]

FAILURE_TTL = 30.0  # seconds a model that failed to resolve (router) or to load (worker pool) is not tried again


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_SECRET_QUERY = ("pass", "secret", "token", "key", "auth")
CACHE_URL_SCHEMES = ("redis", "rediss")
DISPATCH = ("batch", "spread")  # see docs/guide/batching.md, "Where a request goes"
DAEMON_URL_SCHEMES = ("http://", "https://", "unix://")


def redact_url(url: str) -> str:
    """``url`` with its password (and any secret-looking query value) replaced by ``***``: safe to log or show."""
    if "://" not in url:  # not a URL (a typo such as "redis//u:pw@h"): whatever precedes an "@" may be a password
        return "***@" + url.rsplit("@", 1)[1] if "@" in url else url
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user, has_password, _ = userinfo.partition(":")
            netloc = f"{user}:***@{host}" if has_password else f"***@{host}"  # a lone userinfo may be a password
        query = urllib.parse.urlencode(
            [
                (k, "***" if any(s in k.lower() for s in _SECRET_QUERY) else v)
                for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparsable URL>"


def _default_model_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("steadytext-async")) / "models"


def _environ() -> dict[str, str]:
    return dict(os.environ)


def _default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("steadytext-async")) / "cache"


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
    max_batch: int = 8
    dispatch: str = "spread"  # where a new request goes first: an idle worker ("spread") or a decoding batch ("batch")
    prefix_cache_mb: int = 256  # per worker: kept prompt-prefix states (0: no prefix reuse)
    strict: bool = False
    unsafe_mode: bool = False  # allow remote (best-effort deterministic) models without unsafe_mode=True per call
    llama_log: bool = False
    start_timeout: float = 120.0
    spare_workers: int = 0
    host_budget: bool = True
    host_threads: int = dataclasses.field(default_factory=usable_cores)
    budget_dir: Path | None = None
    cache_dir: Path = dataclasses.field(default_factory=_default_cache_dir)
    cache_disabled: bool = False
    cache_max_entries: int = 50_000
    cache_max_bytes: int = 256 * 1024 * 1024
    cache_url: str | None = dataclasses.field(default=None, repr=False)  # may hold a password: never shown
    cache_prefix: str = "steadytext:"
    cache_ttl: float | None = None
    cache_secret: str | None = dataclasses.field(default=None, repr=False)  # HMAC key of Redis values: never shown
    daemon_url: str | None = None  # local generations go to a running `serve` (see providers/daemon.py)
    daemon_insecure: bool = False  # allow the serve token over plain http to a non-loopback daemon
    # the environment when these settings were made: API keys, provider base URLs and the serve token are read here
    environ: Mapping[str, str] = dataclasses.field(default_factory=_environ, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("model_dir", "cache_dir"):  # accept str and any os.PathLike, keep Path
            value = getattr(self, name)
            if isinstance(value, str | os.PathLike) and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
            elif not isinstance(value, Path):
                raise InvalidRequestError(f"{name} must be a str or a path, got {type(value).__name__}")
        for name in ("workers", "threads", "n_ctx", "n_batch", "host_threads", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"{name} must be a positive int, got {value!r}")
        if self.dispatch not in DISPATCH:
            raise InvalidRequestError(f"dispatch must be one of {', '.join(DISPATCH)}, got {self.dispatch!r}")
        if self.spare_workers not in (0, 1) or isinstance(self.spare_workers, bool):
            raise InvalidRequestError(f"spare_workers must be 0 or 1, got {self.spare_workers!r}")
        if self.n_ctx < 16:
            raise InvalidRequestError(f"n_ctx must be >= 16, got {self.n_ctx}")
        mb = self.prefix_cache_mb
        if isinstance(mb, bool) or not isinstance(mb, int) or mb < 0:
            raise InvalidRequestError(f"prefix_cache_mb must be an int >= 0, got {mb!r}")
        for name in ("cache_max_entries", "cache_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"{name} must be a positive int, got {value!r}")
        if self.cache_url is not None:
            scheme = self.cache_url.split("://", 1)[0].lower() if "://" in self.cache_url else ""
            if scheme not in CACHE_URL_SCHEMES:
                raise InvalidRequestError(
                    f"cache_url must start with redis:// or rediss://, got {redact_url(self.cache_url)!r}"
                )
        if not isinstance(self.cache_prefix, str):
            raise InvalidRequestError(f"cache_prefix must be a str, got {self.cache_prefix!r}")
        ttl = self.cache_ttl
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0):
            raise InvalidRequestError(f"cache_ttl must be a positive number of seconds or None, got {ttl!r}")
        if self.cache_secret is not None and (not isinstance(self.cache_secret, str) or not self.cache_secret):
            raise InvalidRequestError("cache_secret must be a non-empty str or None")
        daemon = self.daemon_url
        if daemon is not None and (not isinstance(daemon, str) or not daemon.startswith(DAEMON_URL_SCHEMES)):
            shown = redact_url(daemon) if isinstance(daemon, str) else type(daemon).__name__
            raise InvalidRequestError(f"daemon_url must start with http://, https:// or unix:// (got {shown!r})")

    @property
    def cache_location(self) -> str:
        """Where results are cached, safe to show: the redacted Redis URL, or the sqlite directory."""
        return redact_url(self.cache_url) if self.cache_url else str(self.cache_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``STEADYTEXT_*`` variables; keyword overrides win over the environment.

        A keyword that is passed always wins, ``None`` included: ``daemon_url=None`` (or ``cache_url=None``,
        ``model_path=None``) unsets what the environment set. Leave a keyword out to keep the environment's value.
        """
        e = os.environ if env is None else env
        cores = usable_cores()
        values: dict[str, object] = {
            "size": e.get("STEADYTEXT_SIZE", "mini").strip() or "mini",
            "model_path": e.get("STEADYTEXT_MODEL_PATH") or None,
            "model_dir": Path(e["STEADYTEXT_MODEL_DIR"]) if e.get("STEADYTEXT_MODEL_DIR") else _default_model_dir(),
            "workers": env_int(e, "STEADYTEXT_WORKERS", cores),
            "threads": env_int(e, "STEADYTEXT_THREADS", cores),
            "n_ctx": env_int(e, "STEADYTEXT_N_CTX", 4096, minimum=16),
            "n_batch": env_int(e, "STEADYTEXT_N_BATCH", 512),
            "max_batch": env_int(e, "STEADYTEXT_MAX_BATCH", 8),
            "dispatch": e.get("STEADYTEXT_DISPATCH", "spread").strip().lower() or "spread",
            "prefix_cache_mb": env_int(e, "STEADYTEXT_PREFIX_CACHE_MB", 256, minimum=0),
            "strict": env_bool(e, "STEADYTEXT_STRICT", False),
            "unsafe_mode": env_bool(e, "STEADYTEXT_UNSAFE_MODE", False),
            "llama_log": env_bool(e, "STEADYTEXT_LLAMA_LOG", False),
            "start_timeout": float(env_int(e, "STEADYTEXT_START_TIMEOUT", 120)),
            "spare_workers": env_int(e, "STEADYTEXT_SPARE_WORKERS", 0, minimum=0),
            "host_budget": env_bool(e, "STEADYTEXT_HOST_BUDGET", True),
            "host_threads": env_int(e, "STEADYTEXT_HOST_THREADS", cores),
            "budget_dir": Path(e["STEADYTEXT_BUDGET_DIR"]) if e.get("STEADYTEXT_BUDGET_DIR") else None,
            "cache_dir": Path(e["STEADYTEXT_CACHE_DIR"]) if e.get("STEADYTEXT_CACHE_DIR") else _default_cache_dir(),
            "cache_disabled": env_bool(e, "STEADYTEXT_DISABLE_CACHE", False),
            "cache_max_entries": env_int(e, "STEADYTEXT_CACHE_MAX_ENTRIES", 50_000),
            "cache_max_bytes": env_int(e, "STEADYTEXT_CACHE_MAX_BYTES", 256 * 1024 * 1024),
            "cache_url": e.get("STEADYTEXT_CACHE_URL", "").strip() or None,
            "cache_prefix": e.get("STEADYTEXT_CACHE_PREFIX", "steadytext:"),
            "cache_ttl": float(env_int(e, "STEADYTEXT_CACHE_TTL", 0, minimum=0)) or None,
            "cache_secret": e.get("STEADYTEXT_CACHE_SECRET") or None,
            "daemon_url": e.get("STEADYTEXT_DAEMON_URL", "").strip() or None,
            "daemon_insecure": env_bool(e, "STEADYTEXT_DAEMON_INSECURE", False),
            "environ": dict(e),
        }
        values.update(overrides)  # passed means chosen: None unsets (an absent keyword keeps the env's)
        return cls(**values)  # type: ignore[arg-type]
