"""Policy constants are written once: a module-level constant is not defined with a literal in two modules, and the
sampling defaults are taken from ``_options`` (read with ``ast``; no model)."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

from steadytext_async import _options
from steadytext_async._models import GenerationRequest, SamplingParams
from steadytext_async._worker.protocol import GenParams

PACKAGE = Path(__file__).resolve().parent.parent / "steadytext_async"
SAMPLING_FIELDS = {"temperature", "top_k", "top_p", "min_p", "seed", "top_logprobs"}


def _trees() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text(encoding="utf-8")) for p in PACKAGE.rglob("*.py")}


def test_no_constant_is_written_in_two_modules() -> None:
    # Before: FAILURE_TTL = 30.0 in _router.py and in _worker/parent/pool.py.
    where: dict[str, list[str]] = collections.defaultdict(list)
    for path, tree in _trees().items():
        for node in tree.body:
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper() and isinstance(node.value, ast.Constant):
                    where[target.id].append(path)
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
    assert where["FAILURE_TTL"] == ["_config.py"]


def test_sampling_defaults_are_not_literals_outside_options() -> None:
    # Before: top_k=40, top_p=0.95, min_p=0.05 in SamplingParams and again in the worker's GenParams.
    literal = []
    for path, tree in _trees().items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for field in cls.body:
                if (
                    isinstance(field, ast.AnnAssign)
                    and isinstance(field.target, ast.Name)
                    and field.target.id in SAMPLING_FIELDS - {"temperature"}  # 0.0 is greedy, not a tuned value
                    and isinstance(field.value, ast.Constant)
                ):
                    literal.append(f"{path}:{cls.name}.{field.target.id}")
    assert literal == []


def test_the_worker_and_the_request_default_alike() -> None:
    sampling, params = SamplingParams(), GenParams(prompt="", max_new_tokens=1)
    for name in ("temperature", "seed", "top_k", "top_p", "min_p"):
        assert getattr(params, name) == getattr(sampling, name)
    assert (sampling.top_k, sampling.top_p, sampling.min_p) == (
        _options.DEFAULT_TOP_K,
        _options.DEFAULT_TOP_P,
        _options.DEFAULT_MIN_P,
    )
    assert GenerationRequest(prompt="x").top_logprobs == params.top_logprobs == _options.DEFAULT_TOP_LOGPROBS
