"""Every notebook in colabs/ runs top to bottom, offline, with small settings, and draws its figures."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

COLABS = os.path.join(os.path.dirname(__file__), os.pardir, "colabs")
NOTEBOOKS = sorted(glob.glob(os.path.join(COLABS, "*.ipynb")))


def test_every_notebook_is_listed():
    names = {os.path.basename(n) for n in NOTEBOOKS}
    assert names == {
        "quickstart.ipynb",
        "dreg_toy_gaussian.ipynb",
        "vae_iwae_dreg.ipynb",
        "bnn_r2g2.ipynb",
        "isag_gmm.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_with_small_settings(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, "each notebook has one `parameters` cell"
    # What papermill would inject: small settings, figures written to a temporary folder.
    parameters[0].source = f"SMALL = True\nFIGURE_DIR = {str(tmp_path)!r}"
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images, "the notebook shows no plot"
    assert glob.glob(str(tmp_path / "*.png")), "the notebook saved no figure"
