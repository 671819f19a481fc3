"""Structured decoding on the embedded model: llguidance vs outlines-core in the worker's kind of decode loop.

Greedy, one thread, logits read with ``llama_get_logits_ith`` like ``_worker/child/worker.py``. Prints one JSON line per
figure: tokenizer build time, compile time per grammar (cold, and cached for llguidance), tok/s constrained vs
unconstrained, mask time per token (compute + apply), and whether the output validates.

    .venv/bin/python benchmarks/bench_structured.py [--tokens 48] [--threads 1] [--repeat 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from steadytext_async._exceptions import ConstraintError
from steadytext_async._registry import embedded_model
from steadytext_async._worker.child.decode import SequenceDecoder
from steadytext_async._worker.child.llama import LlamaModel
from steadytext_async._worker.child.sampling import Sampler
from steadytext_async.structured import Constraint, MatcherFactory, check_output, normalize
from steadytext_async.structured.grammar import choices_regex


class Named(BaseModel):
    name: str
    age: int


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=130)
    city: str = Field(max_length=24)
    tags: list[str] = Field(max_length=3)


CASES: list[tuple[str, str, Constraint]] = [
    (
        "json_person",
        "A person record as JSON, for Alice, 31, who lives in Paris and likes tea and chess:\n",
        normalize(schema=Person),  # type: ignore[list-item]
    ),
    # the first example: the model loops inside the name, so the budget rule closes the output
    ("json_forced", "Create a person", normalize(schema=Named)),  # type: ignore[list-item]
    ("regex_date", "The first moon landing happened on (YYYY-MM-DD): ", normalize(regex=r"[0-9]{4}-[0-9]{2}-[0-9]{2}")),  # type: ignore[list-item]
    ("regex_phone", "Call our office at ", normalize(regex=r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}")),  # type: ignore[list-item]
    (
        "choices_sentiment",
        "Review: I loved every minute of this film.\nSentiment (positive, negative or neutral):",
        normalize(choices=["positive", "negative", "neutral"]),  # type: ignore[list-item]
    ),
]


def emit(**fields: Any) -> None:
    print(json.dumps(fields, sort_keys=True), flush=True)


class TimedGuide:
    """Wraps a guide (TokenMatcher's members) and times the calls the decode loop makes to it."""

    def __init__(self, guide: Any) -> None:
        self.guide = guide
        self.seconds = 0.0
        self.reads = 0

    @property
    def done(self) -> bool:
        return bool(self.guide.done)

    @property
    def accepting(self) -> bool:
        return bool(self.guide.accepting)

    @property
    def forced(self) -> bool:
        return bool(getattr(self.guide, "forced", False))

    @property
    def minimum(self) -> int | None:
        return getattr(self.guide, "minimum", None)

    def choose(
        self, logits: Any, pick: Callable[[Any], int], is_end: Callable[[int], bool], *, remaining: int | None = None
    ) -> int | None:
        t0 = time.perf_counter()
        try:
            return self.guide.choose(logits, pick, is_end, remaining=remaining)  # type: ignore[no-any-return]
        finally:
            self.seconds += time.perf_counter() - t0
            self.reads += 1

    def advance(self, token: int) -> None:
        t0 = time.perf_counter()
        self.guide.advance(token)
        self.seconds += time.perf_counter() - t0


class Model(LlamaModel):
    """The model plus the worker's one decode loop (``SequenceDecoder``)."""

    def __init__(self, path: str, threads: int) -> None:
        super().__init__(path, n_ctx=512, n_batch=256, n_threads=threads)

    def decode(self, prompt: str, max_new: int, guide: Any | None) -> dict[str, Any]:
        """Greedy decode; ``guide`` has TokenMatcher's members. Returns text and timings.

        ``steps`` counts decoded tokens; ``reads`` the logits rows the guide looked at (the step that decides the
        end, with no new token, is timed but not counted as a step). ``seconds`` excludes the prompt.
        """
        timed = TimedGuide(guide) if guide is not None else None
        greedy = Sampler(temperature=0.0, seed=0, top_k=0, top_p=1.0, min_p=0.0)
        dec = SequenceDecoder(self, max_new_tokens=max_new, sampler=greedy, matcher=timed)
        tokens = self.tokenize(prompt.encode(), add_bos=True, special=False)
        t0 = time.perf_counter()
        try:
            seconds = self.run(tokens, dec)
        except ConstraintError:  # out of tokens before the output was complete: reported as "length"
            seconds = time.perf_counter() - t0
        steps = len(dec.ids)
        finish = dec.finish_reason if dec.finish_reason in ("constraint_complete", "constraint_forced") else "length"
        return {
            "text": dec.text(),
            "steps": steps,
            "reads": timed.reads if timed is not None else steps,
            "seconds": seconds,
            "mask_s": timed.seconds if timed is not None else 0.0,
            "finish": finish,
        }


class NoBudget:
    """A TokenMatcher with the budget rule off (``remaining`` dropped): what the budget rule itself costs."""

    def __init__(self, matcher: Any) -> None:
        self.m = matcher
        self.advance = matcher.advance

    @property
    def done(self) -> bool:
        return bool(self.m.done)

    @property
    def accepting(self) -> bool:
        return bool(self.m.accepting)

    def choose(self, logits: Any, pick: Any, is_end: Any, *, remaining: int | None = None) -> int | None:
        return self.m.choose(logits, pick, is_end)  # type: ignore[no-any-return]


def _no_budget(factory: MatcherFactory, constraint: Constraint) -> NoBudget:
    return NoBudget(factory.matcher(constraint))


class OutlinesGuide:
    """outlines-core behind the same three members as TokenMatcher (done = only EOS is allowed).

    ``advance`` writes the next mask once; ``mask`` reuses it, so each step computes one mask, as llguidance does.
    """

    def __init__(self, index: Any, eos: int, n_vocab: int) -> None:
        import outlines_core  # type: ignore[import-untyped]

        self.guide = outlines_core.Guide(index)
        self.eos = eos
        self.bits = np.zeros(((n_vocab + 31) // 32,), dtype=np.int32)
        self.n_vocab = n_vocab
        self._fill()

    def _fill(self) -> None:
        self.guide.write_mask_into(self.bits.ctypes.data, self.bits.size, 4)

    def _allows(self, token: int) -> bool:
        return bool((int(self.bits[token >> 5]) >> (token & 31)) & 1)

    @property
    def done(self) -> bool:
        word, bit = divmod(self.eos, 32)
        return bool(np.count_nonzero(self.bits) == 1 and int(self.bits[word]) == (1 << bit))

    @property
    def accepting(self) -> bool:
        return bool(self.guide.is_finished())

    def choose(
        self, logits: Any, pick: Callable[[Any], int], is_end: Callable[[int], bool], remaining: int | None = None
    ) -> int | None:
        """TokenMatcher.choose's completion rule over outlines-core's mask (no budget rule)."""
        if self.done:
            return None
        if self.guide.is_finished():  # outlines-core: "in a final state", i.e. accepting
            token = pick(logits)
            return None if is_end(token) or not self._allows(token) else token
        blocked = np.unpackbits(np.invert(self.bits.view(np.uint8)), count=self.n_vocab, bitorder="little")
        np.copyto(logits, np.float32(-np.inf), where=blocked.view(np.bool_))
        return pick(logits)

    def advance(self, token: int) -> None:
        self.guide.advance(token, return_tokens=False)
        self._fill()


def outlines_regex(constraint: Constraint) -> str:
    from outlines_core.json_schema import build_regex_from_schema  # type: ignore[import-untyped]

    if constraint.kind == "json_schema":
        return build_regex_from_schema(json.dumps(constraint.schema), r"[ ]?")  # type: ignore[no-any-return]
    if constraint.kind == "regex":
        return constraint.pattern
    return choices_regex(constraint.choices)


def validates(constraint: Constraint, text: str) -> bool:
    try:
        check_output(constraint, text)
    except ConstraintError:
        return False
    return True


def run(args: argparse.Namespace) -> None:
    spec = embedded_model()
    model = Model(str(spec.path), args.threads)
    try:
        _run(args, model, spec.name)
    finally:
        model.close()


def _run(args: argparse.Namespace, model: Model, model_name: str) -> None:
    common = {"model": model_name, "n_threads": args.threads, "max_new_tokens": args.tokens}

    unconstrained = model.decode(CASES[0][1], args.tokens, None)
    emit(
        figure="decode_tok_per_s",
        library="none",
        tok_per_s=round(unconstrained["steps"] / unconstrained["seconds"], 2),
        tokens=unconstrained["steps"],
        **common,
    )

    # llguidance
    t0 = time.perf_counter()
    factory = MatcherFactory(model.model)
    emit(figure="tokenizer_build_s", library="llguidance", seconds=round(time.perf_counter() - t0, 3), **common)

    # outlines-core: vocabulary of raw token bytes, end tokens excluded (the Index adds EOS itself).
    import outlines_core

    t0 = time.perf_counter()
    pieces: dict[bytes, list[int]] = {}
    for token in range(model.n_vocab):
        if token in factory.end_tokens:
            continue
        data = model.piece(token)
        if data:
            pieces.setdefault(data, []).append(token)
    eos = model.token_eos()
    oc_vocab = outlines_core.Vocabulary(eos, pieces)
    emit(figure="tokenizer_build_s", library="outlines-core", seconds=round(time.perf_counter() - t0, 3), **common)

    results: list[dict[str, Any]] = []
    for label, prompt, constraint in CASES:
        libs: list[tuple[str, Callable[[], Any]]] = []
        # llguidance: cold compile, then the cached path the worker takes for every later request.
        t0 = time.perf_counter()
        factory.matcher(constraint)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        factory.matcher(constraint)
        warm = time.perf_counter() - t0
        emit(
            figure="compile_ms",
            library="llguidance",
            case=label,
            cold_ms=round(cold * 1e3, 3),
            cached_ms=round(warm * 1e3, 3),
            cached=factory.is_cached(constraint),
            constraint_sha256=constraint.sha256[:16],
            **common,
        )
        libs.append(("llguidance", functools.partial(factory.matcher, constraint)))
        libs.append(("llguidance-no-budget", functools.partial(_no_budget, factory, constraint)))
        t0 = time.perf_counter()
        try:
            index = outlines_core.Index(outlines_regex(constraint), oc_vocab)
        except Exception as exc:  # unsupported by outlines-core: report, keep going
            emit(figure="compile_ms", library="outlines-core", case=label, error=str(exc)[:200], **common)
        else:
            emit(
                figure="compile_ms",
                library="outlines-core",
                case=label,
                cold_ms=round((time.perf_counter() - t0) * 1e3, 3),
                **common,
            )
            libs.append(("outlines-core", functools.partial(OutlinesGuide, index, eos, model.n_vocab)))
        for library, make in libs:
            # Each constrained run is paired with an unconstrained run doing the same number of decode steps on
            # the same prompt; the best of ``--repeat`` pairs is kept, which filters out noise from other jobs.
            runs = []
            plain_s = []
            for _ in range(args.repeat):
                r = model.decode(prompt, args.tokens, make())
                runs.append(r)
                plain_s.append(model.decode(prompt, max(r["reads"], 1), None)["seconds"])
            r = min(runs, key=lambda x: x["seconds"])
            ok = validates(constraint, r["text"]) if r["finish"] != "length" else False
            forced = sum(x["finish"] == "constraint_forced" for x in runs)
            row = {
                "figure": "constrained_decode",
                "library": library,
                "case": label,
                "tok_per_s": round(r["steps"] / r["seconds"], 2),
                "unconstrained_tok_per_s": round(r["steps"] / min(plain_s), 2),
                "ratio": round(min(plain_s) / r["seconds"], 3),
                "tokens": r["steps"],
                "mask_ms_per_token": round(1e3 * r["mask_s"] / max(r["reads"], 1), 3),
                "finish": r["finish"],
                "forced_runs": forced,
                "validates": ok,
                "deterministic": len({x["text"] for x in runs}) == 1,
                "text": r["text"],
                **common,
            }
            extra = {"seconds": r["seconds"], "plain_seconds": min(plain_s), "reads": r["reads"], "mask_s": r["mask_s"]}
            results.append({**row, **extra})
            emit(**row)
    for library in ("llguidance", "llguidance-no-budget", "outlines-core"):
        rows = [r for r in results if r["library"] == library]
        if not rows:
            continue
        steps = sum(r["tokens"] for r in rows)
        secs = sum(r["seconds"] for r in rows)
        plain = sum(r["plain_seconds"] for r in rows)
        reads = sum(r["reads"] for r in rows)
        emit(
            figure="constrained_vs_unconstrained",
            library=library,
            tok_per_s=round(steps / secs, 2),
            unconstrained_tok_per_s=round(steps / plain, 2),
            ratio=round(plain / secs, 3),
            mask_ms_per_token=round(sum(r["mask_ms_per_token"] * r["reads"] for r in rows) / reads, 3),
            # share of constrained decode time spent in the matcher, measured inside the same runs: unlike the
            # ratio it does not move with load from other jobs on the machine
            mask_share=round(sum(r["mask_s"] for r in rows) / secs, 4),
            all_validate=all(r["validates"] for r in rows),
            all_deterministic=all(r["deterministic"] for r in rows),
            **common,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=48, help="max new tokens per run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2, help="runs per case and library; the fastest is kept")
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
