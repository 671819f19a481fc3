"""Command line: ``steadytext-async generate PROMPT`` / ``models``; also ``python -m steadytext_async``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ._options import DEFAULT_SEED

__all__ = ["EXIT_BAD_INPUT", "EXIT_DIFFERENT", "EXIT_ERROR", "EXIT_OK", "main"]

# Exit codes (documented in docs/reference/cli.md): verify uses 1 only for "the outputs differ".
EXIT_OK = 0
EXIT_DIFFERENT = 1  # verify: the replay produced different bytes
EXIT_BAD_INPUT = 2  # bad arguments or input: unreadable/garbage recording, missing consent, invalid options
EXIT_ERROR = 3  # the work failed: model unavailable, worker crash, remote error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="steadytext-async", description="Deterministic text generation.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (includes llama.cpp's log)")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="generate text from PROMPT (or stdin when PROMPT is omitted or '-')")
    g.add_argument("prompt", nargs="?", default="-")
    g.add_argument("--stream", action="store_true", help="print pieces as they are generated")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--max-new-tokens", type=int, default=512)
    g.add_argument("--eos-string", default="[EOS]", help="stop string ('[EOS]': the model's end token)")
    g.add_argument("--model", default=None, help="registry name or path to a .gguf file")
    g.add_argument("--size", default=None, choices=["mini", "small", "large"])
    g.add_argument("--logprobs", action="store_true", help="include per-token logprobs (with --json)")
    g.add_argument("--strict", action="store_true", help="fail instead of returning fallback text")
    g.add_argument("--json", action="store_true", help="print the full result (text and metadata) as JSON")
    sub.add_parser("models", help="list the model registry and what is available locally")
    c = sub.add_parser("cache", help="inspect or clear the result cache")
    c.add_argument("action", choices=["stats", "clear", "path"])
    v = sub.add_parser("verify", help="replay a recording (generate --json output) and check the bytes are identical")
    v.add_argument("recording", help="path to the JSON file, or '-' for stdin")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow replaying a remote recording (sends its prompt to the recorded provider with your API key)",
    )
    v.add_argument(
        "--allow-download",
        action="store_true",
        help="allow a recording to download or load a model other than the embedded one (Hub repo, .gguf file)",
    )
    _add_serve_parser(sub)
    return p


def _add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("serve", help="run the OpenAI-compatible server (also the daemon of STEADYTEXT_DAEMON_URL)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this host only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (0: pick a free one; printed at startup)")
    s.add_argument("--uds", default=None, metavar="PATH", help="listen on a unix socket (mode 0600) instead of TCP")
    s.add_argument("--allow-remote", action="store_true", help="serve remote provider models (provider:model)")
    s.add_argument("--shutdown-timeout", type=float, default=30.0, help="seconds in-flight requests get on SIGTERM")
    s.add_argument("--no-preload", action="store_true", help="start workers on first request, not at startup")
    s.add_argument(
        "--allow-download",
        action="store_true",
        help="let requests name registry models that are not on this host yet (downloads them from the Hub)",
    )
    s.add_argument(
        "--daemon",
        action="store_true",
        help="enable the private endpoint STEADYTEXT_DAEMON_URL clients use (set STEADYTEXT_SERVE_TOKEN with it)",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    from ._config import Settings
    from ._env import serve_token
    from .serve import ServeConfig, run

    settings = dataclasses.replace(Settings.from_env(), daemon_url=None)  # the daemon never forwards to a daemon
    config = ServeConfig(
        settings=settings,
        allow_remote=args.allow_remote,
        token=serve_token(settings.environ),
        shutdown_timeout=args.shutdown_timeout,
        preload=not args.no_preload,
        allow_download=args.allow_download,
        daemon=args.daemon,
    )
    return run(config, host=args.host, port=args.port, uds=args.uds)


def _cmd_generate(args: argparse.Namespace) -> int:
    from ._models import GenerationResult
    from ._options import RequestOptions
    from ._sync import SteadyText

    prompt = _read_recording("-") if args.prompt == "-" else args.prompt
    kwargs: RequestOptions = {
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "temperature": args.temperature,
        "eos_string": args.eos_string,
        "model": args.model,
        "size": args.size,
        "return_logprobs": args.logprobs,
        "strict": True if args.strict else None,
    }
    client = SteadyText()
    try:
        if args.stream:
            result: GenerationResult | None = None
            for item in client.stream(prompt, **kwargs):
                if isinstance(item, GenerationResult):
                    result = item
                elif not args.json:
                    sys.stdout.write(item.text)
                    sys.stdout.flush()
            assert result is not None
        else:
            result = client.generate(prompt, **kwargs)
            if not args.json:
                sys.stdout.write(result.text)
        if args.json:
            sys.stdout.write(result.model_dump_json(indent=2))
        sys.stdout.write("\n")
        if result.fallback:
            print("steadytext-async: model unavailable; printed deterministic fallback text", file=sys.stderr)
    finally:
        client.close()
    return 0


def _read_recording(source: str) -> str:
    """The text of ``source`` (a path, or '-' for stdin); undecodable or unreadable input is a bad request."""
    from ._exceptions import InvalidRequestError

    try:
        return sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{'stdin' if source == '-' else source}: not UTF-8 text") from None
    except OSError as exc:
        raise InvalidRequestError(f"cannot read the recording: {exc}") from None


def _cmd_verify(args: argparse.Namespace) -> int:
    from ._replay import check_consent, load_recording, request_from_fingerprint
    from ._sync import SteadyText

    raw = _read_recording(args.recording)
    consent = {"allow_remote": args.allow_remote, "allow_download": args.allow_download}
    fingerprint, _ = load_recording(raw)
    check_consent(fingerprint, **consent)  # before a client (or a worker) is started
    request_from_fingerprint(fingerprint, **consent)  # every recorded input is valid
    with SteadyText() as client:
        report = client.replay(raw, **consent)
    if args.json:
        print(report.model_dump_json(indent=2, exclude={"result"}))
    else:
        print(report.summary())
    return EXIT_OK if report.identical else EXIT_DIFFERENT


def _cmd_models() -> int:
    from ._config import Settings
    from ._registry import REGISTRY, embedded_status

    settings = Settings.from_env()
    rows = []
    for entry in REGISTRY.values():
        if entry.repo is None:
            status = embedded_status(entry, settings.model_dir)
        else:
            status = _hub_status(entry.repo, entry.filename)
        default = " (default)" if entry.size == settings.size and not settings.model_path else ""
        rows.append(
            {"name": entry.name, "size": entry.size, "source": entry.repo or "embedded", "status": status + default}
        )
    if settings.model_path:
        rows.append(
            {
                "name": settings.model_path,
                "size": None,
                "source": "STEADYTEXT_MODEL_PATH",
                "status": "local file (default)",
            }
        )
    print(json.dumps(rows, indent=2))
    return 0


def _hub_status(repo: str, filename: str) -> str:
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id=repo, filename=filename)
    except Exception:  # pragma: no cover - hub library quirks
        return "unknown"
    return f"downloaded at {hit}" if isinstance(hit, str) else "not downloaded (needs the Hugging Face Hub)"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from ._exceptions import InvalidRequestError, SteadyTextError, UnsafeModeRequiredError

    try:
        if args.command == "generate":
            return _cmd_generate(args)
        if args.command == "verify":
            return _cmd_verify(args)
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "cache":
            from ._cache.cli import cache_command

            return cache_command(args.action)
        return _cmd_models()
    except (InvalidRequestError, UnsafeModeRequiredError) as exc:
        print(f"steadytext-async: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (SteadyTextError, OSError) as exc:
        print(f"steadytext-async: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
