"""Replay a recorded generation and explain any difference.

A recorded result (``GenerationResult`` JSON, e.g. from ``steadytext-async generate --json``) or its fingerprint
holds every input that decided the output. :func:`request_from_fingerprint` rebuilds the request; the client runs
it without the cache; :func:`compare` reports whether the output bytes are identical and which fingerprint fields
differ between the recording and now.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from ._exceptions import ConsentRequiredError, InvalidRequestError
from ._models import Fingerprint, GenerationRequest, GenerationResult, SamplingParams
from ._tools import NamedToolChoice
from ._validate import build_request

if TYPE_CHECKING:
    from .structured import Constraint

__all__ = [
    "FieldDifference",
    "ReplayReport",
    "check_consent",
    "compare",
    "load_recording",
    "recorded_constraint",
    "request_from_fingerprint",
]

# Compared separately (the output), or proven not to change the bytes (the tests pin 1 vs 2 threads).
_OUTPUT_FIELDS = frozenset({"output_sha256", "n_threads"})


class FieldDifference(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str
    recorded: Any
    current: Any


class ReplayReport(BaseModel):
    """Outcome of a replay. ``identical`` is about the output bytes; ``differences`` about the fingerprint."""

    model_config = ConfigDict(frozen=True)

    identical: bool
    recorded_output_sha256: str
    replayed_output_sha256: str
    first_difference: int | None = None  # character offset, when the recorded text is known
    recorded_excerpt: str | None = None
    replayed_excerpt: str | None = None
    inputs_edited: bool = False  # the recorded inputs no longer hash to the recorded inputs_sha256
    differences: list[FieldDifference]
    result: GenerationResult

    def summary(self) -> str:
        """A readable report (what ``steadytext-async verify`` prints)."""
        lines = ["identical: the replay produced the same bytes" if self.identical else "DIFFERENT output bytes"]
        lines.append(f"  recorded sha256 {self.recorded_output_sha256}")
        lines.append(f"  replayed sha256 {self.replayed_output_sha256}")
        if self.first_difference is not None:
            lines.append(f"  first difference at character {self.first_difference}:")
            lines.append(f"    recorded: {self.recorded_excerpt!r}")
            lines.append(f"    replayed: {self.replayed_excerpt!r}")
        if self.inputs_edited:
            lines.append("  the recorded inputs were edited after recording (inputs_sha256 does not match them)")
        if self.differences:
            lines.append("fingerprint fields that differ (recorded -> now):")
            lines.extend(f"  {d.field}: {d.recorded!r} -> {d.current!r}" for d in self.differences)
        else:
            lines.append("fingerprint: every field matches")
        return "\n".join(lines)


def load_recording(source: GenerationResult | Fingerprint | str | dict[str, Any]) -> tuple[Fingerprint, str | None]:
    """The fingerprint and (when present) the recorded text from a result, a fingerprint, or their JSON.

    Anything else (bad JSON, nesting too deep, a wrong shape) is an :class:`InvalidRequestError`.
    """
    if isinstance(source, GenerationResult):
        return source.fingerprint, source.text
    if isinstance(source, Fingerprint):
        return source, None
    if not isinstance(source, str | dict):
        raise InvalidRequestError(
            f"a recording must be a GenerationResult, a Fingerprint, or their JSON, got {type(source).__name__}"
        )
    try:
        data: Any = json.loads(source) if isinstance(source, str) else source
    except RecursionError:
        raise InvalidRequestError("not a steadytext-async recording: JSON nested too deeply") from None
    except ValueError as exc:
        raise InvalidRequestError(f"not a steadytext-async recording: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("a recording must be a JSON object (a result or a fingerprint)")
    try:
        if "fingerprint" in data:
            text = data.get("text")
            return Fingerprint.model_validate(data["fingerprint"]), text if isinstance(text, str) else None
        return Fingerprint.model_validate(data), None
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequestError(f"not a steadytext-async recording: {str(exc)[:500]}") from None


def _model_to_load(fp: Fingerprint) -> str | None:
    """What a local recording would make us download or load, unless it is the embedded model or the default."""
    from ._modelref import parse_model
    from ._registry import REGISTRY, SIZES

    if fp.requested_model_repo is not None or fp.requested_model_filename is not None:
        return f"Hugging Face file {fp.requested_model_repo}/{fp.requested_model_filename}"
    ref = parse_model(fp.requested_model, None, None, fp.requested_size)
    if ref.kind == "file":
        return f"model file {ref.name}"
    if ref.kind in ("registry", "size"):
        entry = (REGISTRY if ref.kind == "registry" else SIZES).get(ref.name or "")
        if entry is None or entry.repo is not None:
            return f"{'model' if ref.kind == 'registry' else 'size'} {ref.name!r} (from the Hugging Face Hub)"
    return None  # the embedded model, the replayer's default, or a remote id (gated as remote by build_request)


def check_consent(fp: Fingerprint, *, allow_remote: bool = False, allow_download: bool = False) -> None:
    """Refuse, before any work, a recording that would reach the network or load an unvetted model.

    A recording is data from anywhere: replaying a remote one sends its prompt with *your* API key, and one that
    names a Hub repo or a model file would download or load it. Both need the caller's explicit consent
    (``allow_remote=True`` / ``--allow-remote``, ``allow_download=True`` / ``--allow-download``); the embedded
    model and the replayer's own default model need none. ``STEADYTEXT_UNSAFE_MODE`` does not count as consent.
    """
    if not isinstance(allow_remote, bool) or not isinstance(allow_download, bool):
        raise InvalidRequestError("allow_remote and allow_download must be bools")
    if fp.provider != "local":
        if not allow_remote:
            raise ConsentRequiredError(
                f"this recording calls the remote provider {fp.provider!r} (model {fp.model!r}): replaying it sends "
                "its prompt with your API key. Pass allow_remote=True (CLI: --allow-remote) if you trust it."
            )
        return
    what = _model_to_load(fp)
    if what is not None and not allow_download:
        raise ConsentRequiredError(
            f"this recording would download or load {what}. "
            "Pass allow_download=True (CLI: --allow-download) if you trust it."
        )


def recorded_constraint(canonical: str) -> Constraint:
    """The recorded constraint, re-validated like a caller's (a recording cannot smuggle in an invalid one)."""
    from .structured import normalize

    try:
        data = json.loads(canonical)
    except (ValueError, RecursionError):
        raise InvalidRequestError("the recorded constraint is not valid JSON") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "regex":
        constraint = normalize(regex=data.get("pattern"))
    elif kind == "choices":
        constraint = normalize(choices=data.get("choices"))
    elif kind == "json_schema" and "name" in data:
        constraint = normalize(
            response_format={"type": "json_schema", "json_schema": {"name": data["name"], "schema": data.get("schema")}}
        )
    elif kind == "json_schema":
        constraint = normalize(schema=data.get("schema"))
    else:
        raise InvalidRequestError(f"the recorded constraint has no valid kind (got {str(kind)[:80]!r})")
    assert constraint is not None
    if constraint.canonical != canonical:
        raise InvalidRequestError("the recorded constraint is not in canonical form (edited after recording?)")
    return constraint


def request_from_fingerprint(
    fp: Fingerprint, *, allow_remote: bool = False, allow_download: bool = False
) -> GenerationRequest:
    """The request a fingerprint records (validated like any call, after :func:`check_consent`)."""
    if fp.fallback:
        raise InvalidRequestError("this recording is deterministic fallback text, not model output: nothing to replay")
    check_consent(fp, allow_remote=allow_remote, allow_download=allow_download)
    remote = fp.provider != "local"
    request = build_request(
        fp.prompt,
        messages=[m.wire() for m in fp.messages] if fp.messages is not None else None,
        max_new_tokens=fp.max_new_tokens,
        return_logprobs=fp.logprobs,
        eos_string=fp.eos_string,
        model=f"{fp.provider}:{fp.model}" if remote else fp.requested_model,
        model_repo=fp.requested_model_repo,
        model_filename=fp.requested_model_filename,
        size=fp.requested_size,
        seed=fp.seed,
        temperature=fp.temperature,
        unsafe_mode=remote,
        tools=[t.wire() for t in fp.tools] if fp.tools is not None else None,
        tool_choice=fp.tool_choice.wire() if isinstance(fp.tool_choice, NamedToolChoice) else fp.tool_choice,
    )
    update: dict[str, Any] = {"top_logprobs": fp.top_logprobs}
    if fp.top_k is not None and fp.top_p is not None and fp.min_p is not None:
        try:
            update["sampling"] = SamplingParams(
                temperature=fp.temperature, seed=fp.seed, top_k=fp.top_k, top_p=fp.top_p, min_p=fp.min_p
            )
        except ValueError as exc:
            raise InvalidRequestError(f"invalid recorded sampling settings: {str(exc)[:300]}") from None
    if fp.constraint is not None:
        update["constraint"] = recorded_constraint(fp.constraint)
    return request.model_copy(update=update)


def compare(
    recorded: Fingerprint, recorded_text: str | None, replayed: GenerationResult, *, inputs_edited: bool
) -> ReplayReport:
    current = replayed.fingerprint
    old, new = recorded.model_dump(mode="json"), current.model_dump(mode="json")
    differences = [
        FieldDifference(field=name, recorded=old.get(name), current=new.get(name))
        for name in sorted(set(old) | set(new))
        if name not in _OUTPUT_FIELDS and old.get(name) != new.get(name)
    ]
    identical = recorded.output_sha256 == current.output_sha256
    first = excerpt_old = excerpt_new = None
    if not identical and recorded_text is not None:
        text = replayed.text
        first = next(
            (i for i, (a, b) in enumerate(zip(recorded_text, text, strict=False)) if a != b),
            min(len(recorded_text), len(text)),
        )
        lo = max(0, first - 20)
        excerpt_old, excerpt_new = recorded_text[lo : first + 40], text[lo : first + 40]
    return ReplayReport(
        identical=identical,
        recorded_output_sha256=recorded.output_sha256,
        replayed_output_sha256=current.output_sha256,
        first_difference=first,
        recorded_excerpt=excerpt_old,
        replayed_excerpt=excerpt_new,
        inputs_edited=inputs_edited,
        differences=differences,
        result=replayed,
    )
