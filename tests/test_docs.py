"""The documentation runs and the site builds: the README's example and the docstring examples
(doctest) run; the site builds with mkdocs --strict and no warning, includes the README's sections
rather than copies of them, documents every public module, and its cross-page anchors resolve."""

from __future__ import annotations

import doctest
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jamem
import jamem.core.dynamics
import jamem.core.energies
import jamem.core.separation

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"


def test_readme_ten_lines_run():
    code = re.search(r"## Ten lines\n.*?```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert bool(scope["sol"].converged) and scope["batch"].shape == (64, 100)


@pytest.mark.parametrize("module", [jamem.core.dynamics, jamem.core.energies, jamem.core.separation])
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    if module is not jamem.core.separation:
        assert tried > 0


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr, result.stderr[-3000:]
    return out


def _text(html: Path) -> str:
    return re.sub(r"<[^>]+>", "", html.read_text())


def _page(site: Path, md: Path) -> str:
    rel = md.relative_to(DOCS).with_suffix("")
    return (site / (rel.parent if rel.name == "index" else rel) / "index.html").read_text()


def test_readme_sections_are_included_not_copied(site):
    readme = (REPO / "README.md").read_text()
    starts = re.findall(r"<!-- --8<-- \[start:(\w+)\] -->", readme)
    ends = re.findall(r"<!-- --8<-- \[end:(\w+)\] -->", readme)
    assert starts and starts == ends
    used = set(re.findall(r'--8<-- "README.md:(\w+)"', "".join(p.read_text() for p in DOCS.rglob("*.md"))))
    assert used <= set(starts)
    # the included text reaches the built pages
    home = _text(site / "index.html")
    assert "python3 -m venv .venv" in home and "random_patterns" in home
    assert "JAMEM_COORDINATOR" in _text(site / "guide" / "distributed" / "index.html")


def test_every_public_module_is_documented(site):
    public = {
        info.name
        for info in pkgutil.walk_packages(jamem.__path__, prefix="jamem.")
        if not any(part.startswith("_") for part in info.name.split(".")) and info.name != "jamem.tooling.cli"
    }
    assert {"jamem.core.dynamics", "jamem.networks.hierarchical", "jamem.classifier.train"} <= public
    reference = "".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    assert sorted(m for m in public if f"::: {m}\n" not in reference) == []
    core = (site / "api" / "core" / "index.html").read_text()
    for name in ("dynamics.retrieve", "energies.DenseEnergy", "capacity.capacity_sweep"):
        assert f'id="jamem.core.{name}"' in core


def test_cross_page_anchors_resolve(site):
    links = []
    for md in DOCS.rglob("*.md"):
        for target, anchor in re.findall(r"\]\(([\w./]+\.md)#([\w.-]+)\)", md.read_text()):
            links.append((md, (md.parent / target).resolve(), anchor))
    assert links
    for source, target, anchor in links:
        assert f'id="{anchor}"' in _page(site, target), f"{source.name} links to a missing {target.name}#{anchor}"


def test_code_blocks_compile():
    blocks = []
    for md in [*DOCS.rglob("*.md"), REPO / "README.md"]:
        blocks += re.findall(r"```python\n(.*?)```", md.read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        compile(block, "<docs>", "exec")
