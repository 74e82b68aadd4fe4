"""The other backend's half of tests/test_keras_files.py (never collected by pytest).

    KERAS_BACKEND=jax python tests/keras_file_worker.py DIR

loads `DIR/from_parent.keras` and writes its weights and posterior-mean predictions on
`DIR/x.npy` to `DIR/parent_loaded.npz`; then builds the same kind of model on its own
backend (other seeds), saves it to `DIR/from_child.keras` and its weights and
predictions to `DIR/child_saved.npz`. The same for each of `MODELS` (`tge.models`, data
`DIR/x_models.npy`, files prefixed with the model's key), where the loaded VAE also
takes a training step on this backend.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def build_model(seed):
    """A small BNN with conv and dense layers and four estimators (R2-G2 as an object with
    its options, the others by name), posterior means at inference; the `kernel_loc`s are
    randomised so that predictions depend on every one."""
    import keras

    import tfp_gradest as tge

    def conv(filters, estimator, i, **kwargs):
        return tge.layers.Conv2DReparameterization(
            filters, 3, gradient_estimator=estimator, seed=seed + i, name=f"conv{i}",
            inference_mode="mean", kl_weight=0.01, **kwargs,
        )  # fmt: skip

    def dense(units, estimator, i, **kwargs):
        return tge.layers.DenseReparameterization(
            units, gradient_estimator=estimator, seed=seed + i, name=f"dense{i}",
            inference_mode="mean", kl_weight=0.01, **kwargs,
        )  # fmt: skip

    r2g2 = tge.layers.estimators.R2G2(conditioning="whole_batch", cg_iterations=8)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            conv(4, r2g2, 1, activation="relu", padding="same"),
            conv(4, "flipout", 2, strides=2, activation="tanh"),
            keras.layers.Flatten(),
            dense(8, "local_reparameterization", 3, activation="relu"),
            dense(3, "reparameterization", 4),
        ],
        name="cross_backend_bnn",
    )
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        if w.path.endswith("_loc"):
            w.assign(rng.normal(scale=0.5, size=w.shape).astype("float32"))
    return model


def snapshot(model, x):
    """`{weight: value, estimator: config, "predictions": model.predict(x)}` as numpy.
    Weights are named by position and layer (a loaded model's variable paths drop the
    model's name); each layer's `gradient_estimator` config is JSON text."""
    result = {
        f"weight:{i}:{layer.name}/{w.name}": np.asarray(w.numpy())
        for layer in model.layers
        for i, w in enumerate(layer.weights)
    }
    for layer in model.layers:
        if "gradient_estimator" in layer.get_config():
            config = json.dumps(layer.get_config()["gradient_estimator"], sort_keys=True)
            result[f"estimator:{layer.name}"] = np.asarray(config)
    # `predict` compiles the model once; an eager call on JAX compiles each layer's
    # inference `cond` anew at every call (slower here).
    result["predictions"] = np.asarray(model.predict(x, verbose=0))
    return result


MODELS = ("vae", "hvae")


def build_models_model(name, seed):
    """`tge.models`' VAE (IWAE-DReG by name) or hierarchical VAE (DReG as an object with its
    options, R2-G2 decoder links), built, with seed-dependent weights."""
    import keras

    import tfp_gradest as tge

    keras.utils.set_random_seed(seed)
    if name == "vae":
        encoder = keras.Sequential([keras.layers.Dense(8, "tanh"), keras.layers.Dense(4)])
        decoder = keras.Sequential([keras.layers.Dense(8, "tanh"), keras.layers.Dense(64)])
        model = tge.models.VariationalAutoencoder(
            encoder, decoder, 2, "iwae_dreg", importance_sample_size=3, seed=seed
        )
    else:
        model = tge.models.HierarchicalVAE(
            64, latent_dims=(6, 4), hidden_units=3, seed=seed,
            gradient_estimator=tge.estimators.DReG(alpha=0.3), decoder_link_gradient="r2g2",
        )  # fmt: skip
    model.build((None, 64))
    return model


def models_snapshot(model, x, train=False):
    """`{weight: value, estimator: config, "predictions": posterior means of x}` as numpy for
    a `tge.models` model (weights by position: both backends create them in one order);
    with `train`, also `"train_loss"`, one `train_on_batch` step under XLA."""
    result = {f"weight:{i}:{w.name}": np.asarray(w.numpy()) for i, w in enumerate(model.weights)}
    config = json.dumps(model.get_config()["gradient_estimator"], sort_keys=True)
    result["estimator:model"] = np.asarray(config)
    result["predictions"] = np.asarray(model.predict(x, verbose=0))
    if train:
        model.compile(optimizer="adam", jit_compile=True)
        result["train_loss"] = np.asarray(model.train_on_batch(x))
    return result


def main(directory):
    import keras

    import tfp_gradest.layers  # noqa: F401  (registers the layers for loading)
    import tfp_gradest.models  # noqa: F401  (and the models)

    x = np.load(os.path.join(directory, "x.npy"))
    loaded = keras.saving.load_model(os.path.join(directory, "from_parent.keras"))
    np.savez(os.path.join(directory, "parent_loaded.npz"), **snapshot(loaded, x))
    model = build_model(seed=100)
    model.save(os.path.join(directory, "from_child.keras"))
    np.savez(os.path.join(directory, "child_saved.npz"), **snapshot(model, x))

    x = np.load(os.path.join(directory, "x_models.npy"))
    for name in MODELS:
        path = os.path.join(directory, f"{name}_")
        loaded = keras.saving.load_model(path + "from_parent.keras")
        np.savez(path + "parent_loaded.npz", **models_snapshot(loaded, x, train=name == "vae"))
        model = build_models_model(name, seed=100)
        model.save(path + "from_child.keras")
        np.savez(path + "child_saved.npz", **models_snapshot(model, x))


if __name__ == "__main__":
    main(sys.argv[1])
