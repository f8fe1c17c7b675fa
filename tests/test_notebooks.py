"""The notebooks run top to bottom (as a user would, with a real Jupyter kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, stream_dir):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    # the history plot rendered with BokehJS inlined (no CDN: there is no network)
    html = [o["data"].get("text/html", "") for o in outputs if "data" in o]
    assert any("Bokeh" in h for h in html) or any(
        "application/vnd.bokehjs_exec.v0+json" in o.get("data", {}) for o in outputs)


def test_notebooks_present():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_streams.ipynb"]
