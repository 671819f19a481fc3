"""Remote provider presets: where each OpenAI-compatible service lives and which dialect it speaks.

``model="provider:model_id"`` looks ``provider`` up here: first among providers added with
:func:`register_provider`, then among the built-in :data:`PRESETS`. ``STEADYTEXT_<NAME>_BASE_URL`` overrides a
provider's base URL (see :func:`steadytext_async._env.provider_base_url`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Literal

from .._env import provider_base_url, provider_base_url_var
from .._exceptions import InvalidRequestError, UnknownProviderError
from .._modelref import PROVIDER_NAME
from .openai_compat._secrets import check_base_url

__all__ = [
    "PRESETS",
    "ProviderPreset",
    "RemoteOptions",
    "get_preset",
    "known_providers",
    "register_provider",
    "unregister_provider",
]

Api = Literal["chat", "completions"]
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RemoteOptions:
    """Transport limits of one provider. Times are seconds."""

    timeout: float = 60.0  # each read/write/pool wait
    connect_timeout: float = 10.0
    deadline: float = 600.0  # the whole call: every attempt, every wait, the whole stream
    max_attempts: int = 3  # HTTP requests per call, retries included
    backoff: float = 0.5  # first wait between attempts (doubles, jittered) when the server gives no Retry-After
    max_backoff: float = 8.0
    max_retry_after: float = 60.0  # a longer Retry-After is not waited for: the call fails
    max_connections: int = 100
    max_keepalive_connections: int = 100
    keepalive_expiry: float = 30.0
    max_response_bytes: int = 16 << 20  # a larger body (JSON or SSE, decoded) is a RemoteProtocolError
    max_bytes_per_token: int = 256  # output over max_new_tokens x this many UTF-8 bytes is a RemoteProtocolError

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidRequestError(f"RemoteOptions.{field.name} must be a positive number, got {value!r}")
        if self.max_keepalive_connections > self.max_connections:
            raise InvalidRequestError("RemoteOptions.max_keepalive_connections must be <= max_connections")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ProviderPreset:
    """An OpenAI-compatible endpoint and its dialect. ``api_key_env=None``: no key is sent."""

    name: str
    base_url: str
    api_key_env: str | None = None
    api: Api = "chat"  # "completions": the legacy /completions API with a raw prompt
    max_tokens_field: MaxTokensField = "max_tokens"
    seed_field: str = "seed"
    logprobs: bool = True  # the service returns logprobs when asked
    stream_usage: bool = True  # send stream_options.include_usage when streaming
    headers: tuple[tuple[str, str], ...] = ()
    options: RemoteOptions = RemoteOptions()

    def __post_init__(self) -> None:
        check_base_url(self.base_url)  # no user:password@ (it would be recorded everywhere)


def _preset(name: str, base_url: str, api_key_env: str | None = None, **kw: object) -> ProviderPreset:
    return ProviderPreset(name=name, base_url=base_url, api_key_env=api_key_env, **kw)  # type: ignore[arg-type]


PRESETS: Mapping[str, ProviderPreset] = {
    p.name: p
    for p in (
        _preset("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", max_tokens_field="max_completion_tokens"),
        _preset("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        _preset(
            "groq",
            "https://api.groq.com/openai/v1",
            "GROQ_API_KEY",
            max_tokens_field="max_completion_tokens",
            logprobs=False,
        ),
        _preset("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        _preset("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        _preset(
            "mistral",
            "https://api.mistral.ai/v1",
            "MISTRAL_API_KEY",
            seed_field="random_seed",
            logprobs=False,
            stream_usage=False,
        ),
        _preset("fireworks", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
        _preset("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", max_tokens_field="max_completion_tokens"),
        _preset("ollama", "http://localhost:11434/v1"),
        _preset("vllm", "http://localhost:8000/v1"),
        _preset("lmstudio", "http://localhost:1234/v1"),
        _preset("llamacpp", "http://localhost:8080/v1"),
    )
}

_lock = threading.Lock()
_registered: dict[str, ProviderPreset] = {}


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not PROVIDER_NAME.fullmatch(name):
        raise InvalidRequestError(
            f"provider name must match [a-z0-9][a-z0-9_.-]+ (lowercase, no ':' or '/'), got {name!r}"
        )
    return name


def register_provider(
    name: str,
    *,
    base_url: str,
    api_key_env: str | None = None,
    api: Api = "chat",
    max_tokens_field: MaxTokensField = "max_tokens",
    seed_field: str = "seed",
    logprobs: bool = True,
    stream_usage: bool = True,
    headers: Mapping[str, str] | None = None,
    options: RemoteOptions | None = None,
    replace: bool = False,
) -> ProviderPreset:
    """Make ``model="<name>:<model_id>"`` reach an OpenAI-compatible server at ``base_url`` (process-wide).

    ``api_key_env`` names the environment variable holding the key (read when a client first uses the provider).
    A built-in or registered name is only replaced with ``replace=True``.
    """
    _check_name(name)
    check_base_url(base_url)
    if api not in ("chat", "completions"):
        raise InvalidRequestError(f"api must be 'chat' or 'completions', got {api!r}")
    if max_tokens_field not in ("max_tokens", "max_completion_tokens"):
        raise InvalidRequestError(
            f"max_tokens_field must be max_tokens or max_completion_tokens, got {max_tokens_field!r}"
        )
    if api_key_env is not None and (not isinstance(api_key_env, str) or not api_key_env):
        raise InvalidRequestError("api_key_env must be a non-empty environment variable name or None")
    preset = ProviderPreset(
        name=name,
        base_url=base_url.rstrip("/"),
        api_key_env=api_key_env,
        api=api,
        max_tokens_field=max_tokens_field,
        seed_field=seed_field,
        logprobs=logprobs,
        stream_usage=stream_usage,
        headers=tuple((str(k), str(v)) for k, v in (headers or {}).items()),
        options=options if options is not None else RemoteOptions(),
    )
    with _lock:
        if not replace and (name in _registered or name in PRESETS):
            raise InvalidRequestError(f"provider {name!r} already exists; pass replace=True to replace it")
        _registered[name] = preset
    return preset


def unregister_provider(name: str) -> None:
    """Forget a provider added with :func:`register_provider` (built-in presets come back)."""
    with _lock:
        _registered.pop(name, None)


def known_providers() -> list[str]:
    """Names usable as ``"<name>:<model_id>"``, sorted."""
    with _lock:
        return sorted({*PRESETS, *_registered})


def get_preset(name: str, env: Mapping[str, str]) -> ProviderPreset:
    """The preset for ``name``, with its base URL overridden by ``STEADYTEXT_<NAME>_BASE_URL`` when ``env`` sets it."""
    with _lock:
        preset = _registered.get(name) or PRESETS.get(name)
    if preset is None:
        raise UnknownProviderError(f"unknown provider {name!r}; known providers: {', '.join(known_providers())}")
    override = provider_base_url(name, env)
    if override is not None:
        check_base_url(override, what=provider_base_url_var(name))
        preset = dataclasses.replace(preset, base_url=override.rstrip("/"))
    return preset
