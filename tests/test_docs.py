"""The docs site builds with ``mkdocs build --strict`` and the README's links into it resolve.

``--strict`` with the validation settings of ``mkdocs.yml`` fails on a broken link or anchor between pages and on a
page that is missing from the nav. The README is not part of the site, so its relative links are checked here:
every target exists, and an ``#anchor`` into a docs page is an id of that page as built.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(nav: list[object]) -> list[str]:
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += nav_pages(value) if isinstance(value, list) else [str(value)]
    return out


def built_page(site: Path, page: str) -> Path:
    """Where mkdocs (``use_directory_urls``) writes ``page``: ``guide/tools.md`` -> ``guide/tools/index.html``."""
    stem = page.removesuffix(".md")
    return site / ("index.html" if stem == "index" else f"{stem.removesuffix('/index')}/index.html")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def test_strict_build_writes_every_nav_page_with_the_material_theme(site: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["theme"]["name"] == "material"
    pages = nav_pages(config["nav"])
    on_disk = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(pages) == on_disk  # every page in the nav, and the nav names no missing page
    for page in pages:
        html = built_page(site, page).read_text()
        assert 'name="generator" content="mkdocs-' in html and "mkdocs-material-" in html, page
    tools = built_page(site, "guide/tools.md").read_text()
    assert "tool_choice" in tools and '<span class="n">weather</span>' in tools  # the text and highlighted code


def test_readme_links_resolve(site: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    targets = [t for t in LINK.findall(readme) if not re.match(r"[a-z]+:", t)]
    assert any(t.startswith("docs/") for t in targets) and "docs/index.md" in {t.split("#")[0] for t in targets}
    for target in targets:
        path, _, anchor = target.partition("#")
        assert (ROOT / path).exists(), f"README links to {target}, which does not exist"
        if anchor:
            assert path.startswith("docs/") and path.endswith(".md"), f"README: anchor into a non-docs file: {target}"
            html = built_page(site, path.removeprefix("docs/")).read_text()
            assert f'id="{anchor}"' in html, f"README links to {target}: no such anchor in the built page"


def test_every_docs_page_is_linked_from_the_readme_or_the_docs_home() -> None:
    linked = {t.split("#")[0] for t in LINK.findall((ROOT / "README.md").read_text())}
    linked |= {"docs/" + t.split("#")[0] for t in LINK.findall((ROOT / "docs" / "index.md").read_text())}
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")} - {"docs/index.md"}
    assert not pages - linked, f"pages nobody links to: {sorted(pages - linked)}"


def test_readme_is_a_front_door() -> None:
    """What it is, the two commands, a short tour and links: the guide and reference belong in docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "bash scripts/run.sh" in readme and "bash scripts/test.sh" in readme


def test_configuration_page_names_every_setting() -> None:
    """Each ``Settings`` field has its variable in the configuration table, and each variable there is read."""
    import dataclasses

    from steadytext_async import Settings

    page = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    documented = set(re.findall(r"`STEADYTEXT_([A-Z_]+)`", page))  # not `STEADYTEXT_<NAME>_BASE_URL`
    keyword = {"DISABLE_CACHE": "cache_disabled"}
    as_fields = {keyword.get(v, v.lower()) for v in documented}
    fields = {f.name for f in dataclasses.fields(Settings)} - {"environ"}  # the snapshot the others are read from
    assert not fields - as_fields, f"settings the configuration page lacks: {sorted(fields - as_fields)}"
    not_settings = {v for v in documented if keyword.get(v, v.lower()) not in fields}
    assert not_settings == {"SERVE_TOKEN", "REPLICA_ID"}, not_settings


def test_errors_page_matches_the_exception_tree_and_serve_statuses() -> None:
    """Every public error is a row; each row's parents and ``serve`` status are the code's."""
    import steadytext_async as st
    from steadytext_async.serve._errors import _classify

    page = (ROOT / "docs" / "reference" / "errors.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| [^|]+ \| (\d{3}) \| (\d) \|$", page, re.M)
    public = {n for n in st.__all__ if n.endswith("Error") and issubclass(getattr(st, n), st.SteadyTextError)}
    assert {r[0] for r in rows} == public - {"SteadyTextError"}, "a row per public error"
    for name, parents, status, _exit in rows:
        cls = getattr(st, name)
        for parent in re.findall(r"`(\w+)`", parents):
            assert parent in {b.__name__ for b in cls.__bases__}, f"{name}: {parent} is not a direct parent"
        assert _classify(cls("x"))[0] == int(status), name
