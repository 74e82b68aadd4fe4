"""Every notebook in colabs/ runs top to bottom, offline, with small settings, and draws its
figures."""

import glob
import importlib.util
import os
import subprocess
import sys

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


def _build_module():
    spec = importlib.util.spec_from_file_location("_build", os.path.join(COLABS, "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(notebook):
    """What `_build.py` decides: cell kinds, sources and tags (not ids, outputs or counts)."""
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in notebook.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_notebook_is_what_build_py_writes(path):
    build = _build_module()
    name = os.path.splitext(os.path.basename(path))[0]
    expected = build.make_notebook(build.NOTEBOOKS[name])
    committed = nbformat.read(path, as_version=4)
    assert _cells(committed) == _cells(expected), (
        f"{os.path.basename(path)} differs from colabs/_build.py: run `python colabs/_build.py`"
    )
    assert committed.metadata == expected.metadata


def test_install_cell_uses_the_package_url_from_setup():
    import tfp_gradest

    build = _build_module()
    assert f"git+{tfp_gradest.__url__}" in build.INSTALL
    assert 'find_spec("tfp_gradest") is None' in build.INSTALL  # skipped when importable
    root = os.path.join(COLABS, os.pardir)
    metadata = subprocess.run(
        [sys.executable, "setup.py", "--url", "--version"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert metadata[-2:] == [tfp_gradest.__url__, tfp_gradest.__version__]


def test_first_code_cell_quiets_tensorflow_before_it_is_imported():
    build = _build_module()
    for name, cells in build.NOTEBOOKS.items():
        first = next(source for kind, source in cells if kind == "code")
        assert 'os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")' in first, name
        assert "import tensorflow" not in first and "import tfp_gradest" not in first, name


# Every notebook runs in every CI run (SMALL = True: 21-46 s each on 2 cores). Each gets
# its own kernel (nbclient picks free ports) and folder, so pytest-xdist may run them at once.
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
    # The notebooks' own code must not make TensorFlow retrace (e.g. a new compiled function
    # per call where one would serve): the warning is noise to a reader and a real cost.
    streams = [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    ]
    retracing = [text for text in streams if "retracing" in text]
    assert not retracing, f"the notebook triggers tf.function retracing: {retracing[:1]}"
    assert glob.glob(str(tmp_path / "*.png")), "the notebook saved no figure"
