"""Every code block in README.md and in every docs/**/*.md page is exercised, so the docs cannot drift from the code.

- ```` ```python ```` blocks run (top-level ``await`` allowed), each in a fresh namespace where ``steadytext`` is
  ``steadytext_async``, ``client`` an ``AsyncSteadyText``, ``BaseModel`` Pydantic's and ``Person`` a small model;
  the default ``max_new_tokens`` is lowered to keep the test short (the code itself is unchanged).
- ```` ```bash ```` blocks are shell: ``bash -n`` must accept them, and every repository script they call
  (``scripts/...``, ``benchmarks/...``) must exist and be executable or a Python/bash file.
- A comment on the line before the fence changes that: ``<!-- readme-test: remote -->`` runs a Python block with
  every remote preset pointed at a loopback OpenAI-compatible stub; ``<!-- readme-test: skip REASON -->`` leaves a
  block out and must say why. Blocks in any other language must carry a marker.

Test ids name the file and line of the fence (``docs/guide/tools.md:9``). Symlinked pages (``docs/contributing.md``,
``docs/benchmarks/RESULTS.md``) are other files shown in the docs site, not sources, so they are not collected.
"""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import steadytext_async as steadytext
from steadytext_async import _validate

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->")


class Block:
    def __init__(self, source: str, line: int, lang: str, code: str, marker: tuple[str, str] | None) -> None:
        self.source, self.line, self.lang, self.code, self.marker = source, line, lang, code, marker

    @property
    def kind(self) -> str:
        if self.marker is not None:
            return self.marker[0]
        return {"python": "python", "bash": "shell", "sh": "shell"}.get(self.lang, "unmarked")

    def __repr__(self) -> str:
        return f"{self.source}:{self.line} ({self.lang or 'no language'}, {self.kind})"


def blocks(text: str, source: str = "README.md") -> list[Block]:
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        prev = lines[start - 1] if start else ""
        mk = MARKER.search(prev)
        marker = (mk.group(1), mk.group(2)) if mk else None
        out.append(Block(source, start + 1, m.group(1), "\n".join(body) + "\n", marker))
        i += 1
    return out


def sources() -> list[Path]:
    """README.md, then every Markdown page under docs/ (symlinks to files kept elsewhere left out)."""
    pages = sorted(p for p in (ROOT / "docs").rglob("*.md") if not p.is_symlink())
    return [ROOT / "README.md", *pages]


BLOCKS = [b for path in sources() for b in blocks(path.read_text(), path.relative_to(ROOT).as_posix())]


class Person(BaseModel):
    name: str
    age: int


def run_python(code: str, filename: str = "<README.md>") -> dict[str, Any]:
    """Run one block; the names the snippets take as given are defined (``client`` is closed afterwards)."""
    client = steadytext.AsyncSteadyText()
    namespace: dict[str, Any] = {
        "steadytext": steadytext,
        "BaseModel": BaseModel,
        "Person": Person,
        "client": client,
        "__name__": "readme",
    }
    compiled = compile(code, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    async def main() -> None:
        try:
            result = eval(compiled, namespace)
            if asyncio.iscoroutine(result):
                await result
        finally:
            await client.aclose()

    asyncio.run(main())
    return namespace


def test_readme_and_docs_have_blocks_and_every_block_is_classified() -> None:
    per_source = {s: sum(b.source == s for b in BLOCKS) for s in {b.source for b in BLOCKS}}
    assert per_source.get("README.md", 0) >= 2, per_source
    assert sum(per_source.values()) >= 15 and len(per_source) >= 10, per_source  # the docs pages hold the rest
    for block in BLOCKS:
        assert block.kind in {"python", "shell", "remote", "skip"}, f"{block}: mark it (see tests/test_readme.py)"
        if block.kind == "skip":
            assert block.marker and len(block.marker[1]) > 5, f"{block}: a skip marker must say why"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "python"], ids=repr)
def test_python_block_runs(block: Block, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_validate, "DEFAULT_MAX_NEW_TOKENS", 24)
    run_python(block.code, f"<{block.source}:{block.line}>")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "remote"], ids=repr)
def test_remote_block_runs_against_a_loopback_stub(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    from _remote_servers import ScriptedServer

    from steadytext_async.providers.presets import PRESETS

    with ScriptedServer() as srv:
        for name, preset in PRESETS.items():
            monkeypatch.setenv(f"STEADYTEXT_{name.upper()}_BASE_URL", srv.url)
            if preset.api_key_env:
                monkeypatch.setenv(preset.api_key_env, "sk-readme-test")
        steadytext.close()  # the module-level functions read the environment again (a client reads it when made)
        try:
            run_python(block.code, f"<{block.source}:{block.line}>")
        finally:
            monkeypatch.undo()
            steadytext.close()  # ... and forget the stub's
        assert srv.requests, "the block made no request to the stub"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "shell"], ids=repr)
def test_shell_block_parses_and_its_scripts_exist(block: Block) -> None:
    subprocess.run(["bash", "-n"], input=block.code, text=True, check=True)
    for path in re.findall(r"(?:^|\s)((?:scripts|benchmarks|examples)/[\w./-]+)", block.code):
        target = ROOT / path
        assert target.exists(), f"{block}: {path} does not exist"
        assert target.suffix in {".py", ".sh"} or target.stat().st_mode & 0o111, f"{block}: {path} not executable"
