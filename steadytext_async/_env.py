"""Reading ``STEADYTEXT_*`` variables (the table is in :mod:`._config`): the parsers :class:`~._config.Settings`
uses, and readers of the variables whose names are only known at use (a provider's API key and base URL) or that are
not settings (the serve token, the replica id). They read the mapping they are given: a client passes the snapshot
its :class:`~._config.Settings` took when it was made (``Settings.environ``), so no request reads ``os.environ``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from ._exceptions import InvalidRequestError

__all__ = [
    "env_bool",
    "env_int",
    "provider_api_key",
    "provider_base_url",
    "provider_base_url_var",
    "replica_id",
    "serve_token",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """``env[name]`` as 1/0, true/false, yes/no or on/off (empty: false); ``default`` when unset."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequestError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    """``env[name]`` as an int of at least ``minimum``; ``default`` when unset or empty."""
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


# -- remote providers ----------------------------------------------------------------------------------------


def provider_base_url_var(name: str) -> str:
    """The variable that overrides a provider's base URL: ``STEADYTEXT_<NAME>_BASE_URL`` (non-alphanumerics -> _)."""
    return "STEADYTEXT_" + "".join(c if c.isalnum() else "_" for c in name.upper()) + "_BASE_URL"


def provider_base_url(name: str, env: Mapping[str, str]) -> str | None:
    """The base URL set by ``STEADYTEXT_<NAME>_BASE_URL`` for provider ``name``, or None when unset or empty."""
    return env.get(provider_base_url_var(name), "").strip() or None


def provider_api_key(env_var: str, env: Mapping[str, str]) -> str | None:
    """The API key held by ``env_var``, or None when unset or empty. Never log the result."""
    return env.get(env_var, "").strip() or None


def serve_token(env: Mapping[str, str]) -> str | None:
    """``STEADYTEXT_SERVE_TOKEN``: the bearer token ``serve`` requires and the daemon client sends. Never log it."""
    return env.get("STEADYTEXT_SERVE_TOKEN", "").strip() or None


def replica_id(env: Mapping[str, str] | None = None) -> str:
    """``STEADYTEXT_REPLICA_ID``: the name ``serve`` reports in ``/metrics`` (default: the host name)."""
    e = os.environ if env is None else env
    return e.get("STEADYTEXT_REPLICA_ID", "").strip() or socket.gethostname()
