"""Secrets of a remote provider: the API key, credentials in URLs, redaction, and the cache scope.

- API keys are kept as pydantic ``SecretStr`` (masked in repr/str) and refused up front when they hold control
  characters: a key with a newline would be sent as a broken header and show up escaped in error text, where
  redaction could not find it.
- A ``base_url`` with ``user:password@`` is refused (:func:`check_base_url`), not stripped: it would otherwise be
  recorded in fingerprints, ``--json`` output, the cache, error messages and DEBUG logs. Send credentials as a
  header instead (``register_provider(..., headers={"Authorization": "Basic ..."})``).
- :class:`Redactor` removes the key and secret-looking header values from any text that leaves the provider, in
  the raw, JSON-escaped and URL-encoded forms a server might echo them in.
- :func:`cache_scope` is a non-reversible identity (HMAC-SHA256) of the key and preset headers: remote cache
  entries are scoped by it, so a caller with key B never reads what key A was answered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from collections.abc import Iterable

from pydantic import SecretStr

from ..._exceptions import InvalidRequestError

__all__ = ["Redactor", "cache_scope", "check_api_key", "check_base_url", "redact_url"]

_SCOPE_KEY = b"steadytext-async/remote-cache-scope/v1"
# Header values not worth hiding: they are public dialect switches, and hiding short words would mangle text.
_MIN_SECRET = 8


def _has_control(value: str) -> bool:
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value)


def check_api_key(key: str | None, *, provider: str) -> SecretStr | None:
    """``key`` as a ``SecretStr``; None for no key. Control characters raise InvalidRequestError (key not shown)."""
    if key is None or key == "":
        return None
    if not isinstance(key, str):
        raise InvalidRequestError(f"the API key of provider {provider!r} must be a str")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(
            f"the API key of provider {provider!r} is not valid text (undecodable bytes in its variable?)"
        ) from None
    if _has_control(key) or key != key.strip():
        raise InvalidRequestError(
            f"the API key of provider {provider!r} contains control characters or surrounding whitespace "
            "(a newline or a tab, often from a file); fix the variable that holds it"
        )
    return SecretStr(key)


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (for error messages)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def check_base_url(url: object, *, what: str = "base_url") -> str:
    """``url`` if it is an http(s) URL without credentials, else InvalidRequestError (credentials not shown)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        shown = redact_url(url) if isinstance(url, str) else repr(url)
        raise InvalidRequestError(f"{what} must be an http(s) URL, got {shown!r}")
    if _has_control(url):
        raise InvalidRequestError(f"{what} must not contain control characters")
    try:
        netloc = urllib.parse.urlsplit(url).netloc
    except ValueError as exc:
        raise InvalidRequestError(f"{what} is not a valid URL: {exc}") from None
    if "@" in netloc:
        raise InvalidRequestError(
            f"{what} {redact_url(url)!r} contains credentials (user:password@); they would be recorded in "
            "fingerprints, caches and logs. Pass them as a header instead: "
            "register_provider(..., headers={'Authorization': 'Basic <base64 user:password>'})"
        )
    return url


def _forms(secret: str) -> set[str]:
    """The ways a server may echo ``secret``: raw, JSON-escaped, URL-encoded."""
    return {secret, json.dumps(secret)[1:-1], urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}


class Redactor:
    """Replaces every known secret in a text with ``***``."""

    __slots__ = ("_secrets",)

    def __init__(self, api_key: SecretStr | None, headers: Iterable[tuple[str, str]] = ()) -> None:
        values = [api_key.get_secret_value()] if api_key is not None else []
        values += [v for _, v in headers if len(v) >= _MIN_SECRET]
        found: set[str] = set()
        for value in values:
            found |= _forms(value)
            _, _, token = value.partition(" ")  # "Bearer xyz": hide the token on its own too
            if token and len(token) >= _MIN_SECRET:
                found |= _forms(token)
        self._secrets = sorted((s for s in found if s), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text


def cache_scope(api_key: SecretStr | None, headers: Iterable[tuple[str, str]]) -> str | None:
    """HMAC-SHA256 of the key and the preset headers; None when the provider sends neither."""
    pairs = sorted((k.lower(), v) for k, v in headers)
    if api_key is None and not pairs:
        return None
    material = json.dumps([api_key.get_secret_value() if api_key is not None else None, pairs])
    return hmac.new(_SCOPE_KEY, material.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
