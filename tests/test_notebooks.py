"""The notebooks run top to bottom (small sizes)."""

from pathlib import Path

import nbformat
import pytest
from conftest import SHARED_DATA
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch, request):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # offline: the shared IDX files, and the session's prepared cache
    if any(word in path.name for word in ("mnist", "energy_family", "adversarial")):
        request.getfixturevalue("mnist")
        monkeypatch.setenv("JAMEM_DATA_DIR", str(SHARED_DATA))
        monkeypatch.setenv("JAMEM_CACHE_DIR", str(request.getfixturevalue("cache")))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
