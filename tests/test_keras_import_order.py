"""A `.keras` file of `tge.layers` (and of `tge.models`) loads in a fresh process
whichever is imported first, Keras or tfp_gradest (`import tfp_gradest` alone does not import
Keras, yet must leave Keras able to find the package's classes)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfp_gradest as tge

pytestmark = pytest.mark.backends

# Each line imports in its own order, then loads every file given on the command line.
_LOAD = """
import sys
{imports}
for path in sys.argv[1:]:
    print(type(keras.saving.load_model(path)).__name__)
"""
_ORDERS = {
    "tfp_gradest, then keras": (
        "import tfp_gradest\n"
        "assert 'keras' not in sys.modules, 'import tfp_gradest imported keras'\n"
        "import keras"
    ),
    # Keras first imported by one of the package's own modules, half-way through its import.
    "a tfp_gradest submodule, then keras": "import tfp_gradest.callbacks\nimport keras",
}


@pytest.fixture(scope="module")
def saved_files(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("keras_files")
    x = np.ones((4, 3), "float32")
    dense = keras.Sequential([keras.Input((3,)), tge.layers.DenseReparameterization(2, seed=1)])
    dense(x)
    paths = {"Sequential": tmp_path / "dense.keras"}
    dense.save(paths["Sequential"])
    vae = tge.models.VariationalAutoencoder(
        keras.Sequential([keras.layers.Dense(4)]),
        keras.Sequential([keras.layers.Dense(3)]),
        latent_dim=2,
        seed=0,
    )
    vae.compile("adam")
    vae.fit(x, epochs=1, verbose=0)
    paths["VariationalAutoencoder"] = tmp_path / "vae.keras"
    vae.save(paths["VariationalAutoencoder"])
    return paths


@pytest.mark.parametrize("order", list(_ORDERS))
def test_a_keras_file_loads_whatever_the_import_order(order, saved_files):
    paths = saved_files
    code = _LOAD.format(imports=_ORDERS[order])
    environment = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", code, *map(str, paths.values())],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == list(paths), result.stdout


@pytest.mark.parametrize(
    "imports", ["import keras\nimport tfp_gradest", "import tfp_gradest\nimport keras"]
)
def test_an_unimportable_tfp_leaves_the_layers_registered(imports, saved_files, tmp_path):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the fake TFP stands in for TensorFlow's; the JAX pass has its own")
    # A TensorFlow Probability that is installed but fails to import (as one that does not
    # match TensorFlow's version does): the layers and the models (which import TFP only when
    # they compute a loss) still register, so the saved file loads.
    fake = tmp_path / "tensorflow_probability"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('TFP needs another TensorFlow')\n")
    environment = dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    )
    code = _LOAD.format(imports=imports)
    result = subprocess.run(
        [sys.executable, "-c", code, str(saved_files["Sequential"])],
        env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["Sequential"], result.stdout
    assert "could not register" not in result.stderr
