"""The package's import graph: no import cycles between modules and no import from a layer above.

Every ``import`` of the package is read with ``ast`` (module level, inside functions and under ``TYPE_CHECKING``:
each is a dependency a reader has to follow). ``from pkg import name`` counts as an import of ``pkg.name`` when that
is a module, else of ``pkg`` itself. A package's ``__init__`` is a module of its own; the implicit import of a parent
package is not an edge (importing ``_cache.key`` runs ``_cache/__init__`` but does not depend on it).
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "steadytext_async"
NAME = PACKAGE.name

# The layers, lowest first. A module may import modules of its own group and of any group in a lower tier; groups of
# one tier do not import each other. A module belongs to the group of its longest matching prefix.
TIERS: list[dict[str, list[str]]] = [
    # leaves: errors, plain values, the environment and settings
    {
        "base": [
            "_exceptions",
            "_version",
            "_unicode",
            "_options",
            "_textstream",
            "_fallback",
            "_loopexit",
            "_env",
            "_config",
            "_worker.limits",  # the worker pipe's size limits: request validation checks prompts against them
            "_errorwire",  # errors across the pipe, the daemon and serve: one record, one registry
            "_process",  # this process and its forks: lifetimes and the fork hooks
        ]
    },
    {"structured": ["structured"]},
    # what a request is: validated values, model references, the model registry
    {"request": ["_tools", "_messages", "_modelref", "_models", "_registry", "_validate"]},
    # the one wire module between the parent's and the worker process's side of the pipe
    {"wire": ["_worker.protocol"]},
    # the two backends the engine owns (independent of each other): worker processes, split by process (the
    # parent's pool side and the child's side never import each other; they share only the wire), and the cache
    {"parent": ["_worker.parent"], "child": ["_worker.child"], "cache": ["_cache"]},
    {"engine": ["_engine"]},
    {"providers": ["providers"]},
    {"routing": ["_router", "_results", "_replay"]},
    {"client": ["_client"]},
    {"front": ["_api", "_sync"]},
    {"compat": ["_compat"], "serve": ["serve"]},
    {"cli": ["cli", "__main__"]},
    {"facade": [""]},  # steadytext_async/__init__.py
]


def _module_name(path: Path) -> str:
    parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the package modules it imports (anywhere in its source)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, frozenset[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
        edges[name] = frozenset(t for t in found if t in modules and t != name)
    return edges


def group_of(module: str) -> tuple[int, str]:
    """(tier, group) of ``module``, by its longest matching prefix."""
    rel = module[len(NAME) + 1 :] if module != NAME else ""
    best: tuple[int, int, str] | None = None
    for tier, groups in enumerate(TIERS):
        for group, prefixes in groups.items():
            for prefix in prefixes:
                matches = rel == prefix or rel.startswith(prefix + ".")
                if matches and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), tier, group)
    assert best is not None, f"{module} is in no layer: add it to TIERS"
    return best[1], best[2]


def is_upward(module: str, target: str) -> bool:
    tier, group = group_of(module)
    t_tier, t_group = group_of(target)
    return t_group != group and t_tier >= tier


def upward_imports() -> list[str]:
    edges = graph()
    return [f"{m} -> {t}" for m in sorted(edges) for t in sorted(edges[m]) if is_upward(m, t)]


def cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    edges = graph()
    # a relative import, a function-level import and a TYPE_CHECKING import, each seen
    assert f"{NAME}._exceptions" in edges[f"{NAME}._config"]
    assert f"{NAME}._client" in edges[f"{NAME}._api"]  # imported inside functions and under TYPE_CHECKING
    assert f"{NAME}.providers.openai_compat" in edges[f"{NAME}._router"]  # inside a method
    assert len(edges) > 80


def test_every_module_has_a_layer() -> None:
    for module in graph():
        group_of(module)


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_a_cycle_is_found() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert cycles(edges) == [["a", "b", "c"]]


def test_no_upward_imports() -> None:
    assert upward_imports() == []


@pytest.mark.parametrize(
    ("module", "target", "upward"),
    [
        ("_worker.parent.pool", "_engine.engine", True),
        ("_cache.key", "_worker.parent.pool", True),  # same tier, another group
        ("structured.local", "_client", True),
        ("_client", "_cache", False),
        ("_worker.parent.pool", "_worker.parent.handle", False),
        ("_worker.parent.pool", "_worker.protocol", False),
        ("_worker.child.batch", "_worker.protocol", False),
        ("_worker.child.worker", "_worker.parent.handle", True),  # the two sides of the pipe
        ("_worker.parent.handle", "_worker.child.worker", True),
        ("_worker.protocol", "_worker.parent.pool", True),  # the wire imports neither side
        ("_worker.protocol", "_worker.child.decode", True),
    ],
)
def test_the_rule_itself(module: str, target: str, upward: bool) -> None:
    assert is_upward(f"{NAME}.{module}", f"{NAME}.{target}") is upward


@pytest.mark.parametrize(
    ("module", "other"),
    [
        ("steadytext_async._worker.child.worker", "steadytext_async._worker.parent"),  # what a worker process runs
        ("steadytext_async.providers.local", "steadytext_async._worker.child"),  # the parent's whole pool side
    ],
)
def test_each_side_of_the_pipe_loads_without_the_other(module: str, other: str) -> None:
    """At run time, not only in the source: importing one side loads no module of the other."""
    code = "import importlib, sys; importlib.import_module(sys.argv[1]); print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code, module], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert module in loaded
    assert [m for m in loaded if m == other or m.startswith(other + ".")] == []


# -- one door into the engine --------------------------------------------------------------------------------------
# The module-level functions, the blocking client and the server drive the SDK through the client's declared methods
# (public, or documented as the package's own), never through another object's private members.
FRONT_DOORS = ["_api.py", "_sync.py", *sorted(f"serve/{p.name}" for p in (PACKAGE / "serve").glob("*.py"))]
PRIVATE_REACH_ALLOWED: dict[str, str] = {}  # "file: expression" -> why it cannot be avoided


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def private_reaches(rel: str) -> list[str]:
    """``obj._name`` where ``obj`` is not ``self``, ``cls`` or a module, and ``from module import _name`` of a
    name that is not a module, in the file ``rel`` of the package."""
    path = PACKAGE / rel
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rpartition(".")[0]
    modules: set[str] = set()  # local names bound to modules
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.asname or alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                is_module = target.startswith(NAME) and _is_module(f"{target}.{alias.name}")
                if is_module:
                    modules.add(alias.asname or alias.name)
                elif alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{rel}: from {target} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and (owner.id in ("self", "cls") or owner.id in modules):
                continue
            found.append(f"{rel}: {ast.unparse(node)}")
    return [f for f in found if f not in PRIVATE_REACH_ALLOWED]


def test_the_front_doors_reach_no_private_member() -> None:
    # before: default_client()._agenerate, self._async._preload, client._local._pool, pool._workers, ...
    assert [reach for rel in FRONT_DOORS for reach in private_reaches(rel)] == []


def test_a_private_reach_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = "import os\nfrom .._replay import _constraint\nx = client._local._pool\ny = self._own\nz = os._exit\n"
    fake = tmp_path / NAME / "serve"
    fake.mkdir(parents=True)
    (fake / "_sample.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path / NAME)
    assert private_reaches("serve/_sample.py") == [
        "serve/_sample.py: from steadytext_async._replay import _constraint",
        "serve/_sample.py: client._local._pool",
        "serve/_sample.py: client._local",
    ]
