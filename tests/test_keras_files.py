"""`.keras` files saved on one Keras backend load on the other, with equal predictions."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np

from . import keras_file_worker

WORKER = pathlib.Path(__file__).with_name("keras_file_worker.py")


# One subprocess on the other backend (~17 s); both directions are checked in each run.
def test_keras_files_cross_between_tensorflow_and_jax(tmp_path):
    here = keras.backend.backend()
    other = "jax" if here == "tensorflow" else "tensorflow"
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 2)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    model = keras_file_worker.build_model(seed=10)
    model.save(tmp_path / "from_parent.keras")
    saved_here = keras_file_worker.snapshot(model, x)
    # tge.models too, in the same subprocess (binary data for their Bernoulli likelihood).
    x_models = (np.random.default_rng(1).uniform(size=(6, 64)) > 0.5).astype("float32")
    np.save(tmp_path / "x_models.npy", x_models)
    models_saved_here = {}
    for name in keras_file_worker.MODELS:
        model = keras_file_worker.build_models_model(name, seed=10)
        model.save(tmp_path / f"{name}_from_parent.keras")
        models_saved_here[name] = keras_file_worker.models_snapshot(model, x_models)

    env = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    loaded_there = dict(np.load(tmp_path / "parent_loaded.npz"))
    saved_there = dict(np.load(tmp_path / "child_saved.npz"))
    loaded_here = keras_file_worker.snapshot(
        keras.saving.load_model(tmp_path / "from_child.keras"), x
    )
    for saved, loaded in [(saved_here, loaded_there), (saved_there, loaded_here)]:
        assert saved.keys() == loaded.keys()
        for key in saved:
            if key.startswith("weight:"):
                np.testing.assert_array_equal(loaded[key], saved[key], err_msg=key)
            if key.startswith("estimator:"):  # a name, or an object's config (R2-G2's options)
                assert str(loaded[key]) == str(saved[key]), key
        # Posterior means: the same float32 convolutions and matmuls on two backends
        # (oneDNN for TensorFlow, XLA for JAX) agree to a few float32 ulps per layer,
        # outputs are O(1): 1e-5 relative. A lost or mis-mapped variable changes them O(1).
        np.testing.assert_allclose(
            loaded["predictions"], saved["predictions"], rtol=1e-5, atol=1e-5
        )
    # The two models differ (seeds 10 and 100), so the comparison above can fail.
    assert not np.allclose(saved_here["predictions"], saved_there["predictions"], atol=1e-2)
    assert "cg_iterations" in str(saved_here["estimator:conv1"])

    for name in keras_file_worker.MODELS:
        loaded_there = dict(np.load(tmp_path / f"{name}_parent_loaded.npz"))
        saved_there = dict(np.load(tmp_path / f"{name}_child_saved.npz"))
        loaded_here = keras_file_worker.models_snapshot(
            keras.saving.load_model(tmp_path / f"{name}_from_child.keras"), x_models
        )
        saved_here = models_saved_here[name]
        for saved, loaded in [(saved_here, loaded_there), (saved_there, loaded_here)]:
            assert saved.keys() <= loaded.keys(), name
            for key in saved:
                if key.startswith("weight:"):
                    np.testing.assert_array_equal(loaded[key], saved[key], err_msg=key)
            assert str(loaded["estimator:model"]) == str(saved["estimator:model"]), name
            # Posterior means: float32 matmuls on two backends, as above.
            np.testing.assert_allclose(
                loaded["predictions"], saved["predictions"], rtol=1e-5, atol=1e-5
            )
        if "train_loss" in loaded_there:  # the VAE's: it trains on the other backend
            assert np.isfinite(loaded_there["train_loss"]), name
        assert not np.allclose(saved_here["predictions"], saved_there["predictions"], atol=1e-2)
    assert "alpha" in str(models_saved_here["hvae"]["estimator:model"])
