"""``steadytext-async serve``: the SDK behind an OpenAI-compatible HTTP face, and the daemon other processes use.

- ``/v1/completions``, ``/v1/chat/completions`` (both with SSE streaming) and ``/v1/models``, OpenAI's wire format;
  our parameters (``seed``, ``regex``, ``choices``, ``schema``, ``response_format``, ``eos_string``) as extra body
  fields; responses carry the SDK's bytes plus a ``steadytext`` object (fingerprint, token ids, cached).
- ``/health`` (no auth) and ``/metrics`` (Prometheus text).
- A private endpoint that streams raw provider events to :class:`~steadytext_async.providers.daemon.DaemonProvider`.

Binds 127.0.0.1 by default; ``STEADYTEXT_SERVE_TOKEN`` turns on bearer auth; remote providers only with
``allow_remote`` (``--allow-remote``).
"""

from ._app import create_app
from ._run import run
from ._state import ServeConfig

__all__ = ["ServeConfig", "create_app", "run"]
