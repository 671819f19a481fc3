"""Replay a recorded generation and explain any difference.

A recorded result (``GenerationResult`` JSON, e.g. from ``steadytext-async generate --json``) or its fingerprint
holds every input that decided the output. :func:`request_from_fingerprint` rebuilds the request; the client runs
it without the cache; :func:`compare` reports whether the output bytes are identical and which fingerprint fields
differ between the recording and now.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from ._exceptions import InvalidRequestError
from ._models import Fingerprint, GenerationRequest, GenerationResult, SamplingParams
from ._validate import build_request

__all__ = ["FieldDifference", "ReplayReport", "compare", "load_recording", "request_from_fingerprint"]

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
    """The fingerprint and (when present) the recorded text from a result, a fingerprint, or their JSON."""
    if isinstance(source, GenerationResult):
        return source.fingerprint, source.text
    if isinstance(source, Fingerprint):
        return source, None
    data: Any = json.loads(source) if isinstance(source, str) else source
    if not isinstance(data, dict):
        raise InvalidRequestError("a recording must be a JSON object (a result or a fingerprint)")
    try:
        if "fingerprint" in data:
            text = data.get("text")
            return Fingerprint.model_validate(data["fingerprint"]), text if isinstance(text, str) else None
        return Fingerprint.model_validate(data), None
    except ValueError as exc:
        raise InvalidRequestError(f"not a steadytext-async recording: {exc}") from None


def request_from_fingerprint(fp: Fingerprint) -> GenerationRequest:
    """The request a fingerprint records (validated like any call)."""
    if fp.fallback:
        raise InvalidRequestError("this recording is deterministic fallback text, not model output: nothing to replay")
    remote = fp.provider not in ("local",)
    request = build_request(
        fp.prompt,
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
    )
    update: dict[str, Any] = {"top_logprobs": fp.top_logprobs}
    if fp.top_k is not None and fp.top_p is not None and fp.min_p is not None:
        update["sampling"] = SamplingParams(
            temperature=fp.temperature, seed=fp.seed, top_k=fp.top_k, top_p=fp.top_p, min_p=fp.min_p
        )
    if fp.constraint is not None:
        from .structured import Constraint

        kind = json.loads(fp.constraint)["kind"]
        update["constraint"] = Constraint(kind=kind, canonical=fp.constraint)
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
