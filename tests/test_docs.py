"""The documentation runs: the README's example and the docstring examples (doctest)."""

import doctest
import re
from pathlib import Path

import pytest

import jamem.core.dynamics
import jamem.core.energies
import jamem.core.separation

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_ten_lines_run():
    code = re.search(r"## Ten lines\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert bool(scope["sol"].converged) and scope["batch"].shape == (64, 100)


@pytest.mark.parametrize("module", [jamem.core.dynamics, jamem.core.energies, jamem.core.separation])
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    if module is not jamem.core.separation:
        assert tried > 0
