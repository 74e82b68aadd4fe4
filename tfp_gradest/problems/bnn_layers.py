"""A Bayesian MLP built from `tge.layers` on scikit-learn's bundled digits: the layers'
estimators."""

import keras
import numpy as np

from tfp_gradest.problems.base import Problem, register

__all__ = ["BayesianNeuralNetworkLayers"]


@register("bnn_layers")
class BayesianNeuralNetworkLayers(Problem):
    """A 64-`hidden`-10 MLP of `tge.layers.DenseReparameterization` layers on the 8×8 digits.

    ```none
    loss(μ, ρ) = mean_n CE(y_n, f_W(x_n)) + KL(q(W) || p(W)) / N,   W ~ q(W) = N(μ, softplus(ρ)²)
    ```

    (the negative ELBO divided by `N`). The estimators are the layers' own
    (`tge.layers.GRADIENT_ESTIMATORS`: the reparameterisation trick with one
    weight sample per batch, the local reparameterisation trick, Flipout and
    R2-G2); they are unbiased for the same gradient and differ in variance.
    Every estimator gets its own copy of the model with the same weights.
    The gradients compared are those of the posterior *scale* parameters
    (`*_scale_raw`), whose noise the estimators differ in most (their
    location gradients share the minibatch noise-free data term).

    `sample_size` and `importance_sample_size` must be 1: the layers draw one
    weight sample (or one per example) per call.

    It runs on the active Keras backend, TensorFlow or JAX (its layers are Keras
    layers; `--backend jax` sets `KERAS_BACKEND` when Keras is not imported yet): on
    JAX its gradients are drawn as `tge.diagnostics.model_gradient_draws` draws them,
    the layers' `SeedGenerator` states carried through a jitted `lax.scan`.

    Args:
      hidden: Python `int`, hidden units. Default value: `32`.
      num_examples: Python `int`, digits in the batch (the first ones). Default value: `256`.
      initial_posterior_scale: the layers' initial posterior standard deviation.
        Default value: `0.1`.
      seed: seed of the initial weights and of the layers' noise. Default value: `0`.
    """

    default_estimators = ("reparameterization", "local_reparameterization", "flipout", "r2g2")
    reference_estimator = "local_reparameterization"
    fit_learning_rate = 0.003

    def __init__(self, hidden=32, num_examples=256, initial_posterior_scale=0.1, seed=0):
        from sklearn.datasets import load_digits

        data = load_digits()
        self.x = (data.data[:num_examples] / 16.0).astype(np.float32)
        self.y = data.target[:num_examples].astype(np.int32)
        self.hidden, self.seed = hidden, seed
        self.initial_posterior_scale = initial_posterior_scale
        self._models = {}
        self.model = self._build("reparameterization")  # holds the weights every copy starts from

    def _build(self, estimator):
        from tfp_gradest import layers

        model = layers.bayesian_mlp(
            (self.x.shape[1],),
            [self.hidden, 10],
            gradient_estimator=estimator,
            seed=self.seed,
            kl_weight=1.0 / len(self.x),
            initial_posterior_scale=self.initial_posterior_scale,
        )
        if hasattr(self, "model"):
            model.set_weights(self.model.get_weights())
        return model

    def model_for(self, estimator):
        """The model with `estimator` in every layer and the current weights of `model`."""
        if estimator not in self._models:
            self._models[estimator] = self._build(estimator)
        else:
            self._models[estimator].set_weights(self.model.get_weights())
        return self._models[estimator]

    @property
    def variables(self):
        return _scale_variables(self.model)

    @property
    def surrogate(self):  # no single tfd.Distribution: the posterior lives in the layers
        raise AttributeError("bnn_layers keeps its posterior in the layers; see `model`.")

    def target_log_prob(self, z):
        raise NotImplementedError("bnn_layers is a Keras model; use `loss_fn`.")

    substrates = ("tensorflow", "jax")

    def check_substrate(self, substrate):
        super().check_substrate(substrate)
        if keras.backend.backend() != substrate:
            raise ValueError(
                f"Problem {self.name!r} is a Keras model: it runs on the active Keras backend, "
                f"{keras.backend.backend()!r}. Set KERAS_BACKEND={substrate} before Keras is "
                f"imported (the command line does for --backend, unless Keras was imported "
                f"first). Received: backend={substrate!r}"
            )

    def state_variables_for(self, estimator):
        return list(self.model_for(estimator).non_trainable_variables)

    def estimator_names(self):
        from tfp_gradest import layers

        return sorted(layers.GRADIENT_ESTIMATORS)

    def validate_estimator(self, estimator, sample_size=1, importance_sample_size=1, noise="iid"):
        if noise != "iid":
            raise ValueError(
                f"Problem {self.name!r} draws its noise in the Bayesian layers (their seed "
                "generators); `noise` is an option of the surrogate problems' estimators. "
                f"Received: noise={noise!r}"
            )
        if estimator not in self.estimator_names():
            raise ValueError(
                f"Problem {self.name!r} compares the Bayesian layers' estimators: "
                f"{', '.join(self.estimator_names())}. Received: estimator={estimator!r}"
            )
        if sample_size != 1 or importance_sample_size != 1:
            raise ValueError(
                f"Problem {self.name!r} draws one weight sample per call: use sample_size=1 and "
                f"importance_sample_size=1. Received: sample_size={sample_size}, "
                f"importance_sample_size={importance_sample_size}"
            )

    def loss_fn(self, estimator, sample_size=1, importance_sample_size=1, noise="iid"):
        self.validate_estimator(estimator, sample_size, importance_sample_size, noise)
        model = self.model_for(estimator)
        ops = keras.ops
        x, y = ops.convert_to_tensor(self.x), ops.convert_to_tensor(self.y)

        def loss(seed=None):  # the noise comes from the layers' seed generators
            del seed
            logits = model(x, training=True)
            nll = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            return ops.mean(nll) + ops.sum(ops.stack(model.losses))

        return loss

    def variables_for(self, estimator):
        return _scale_variables(self.model_for(estimator))

    def fit(self, num_steps, seed=0, substrate="tensorflow"):
        if num_steps < 1:
            raise ValueError(f"`num_steps` must be at least 1. Received: num_steps={num_steps}")
        self.check_substrate(substrate)
        self.model.compile(
            keras.optimizers.Adam(self.fit_learning_rate),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=True,
        )
        batch = len(self.x)
        epochs = max(num_steps, 1)
        history = self.model.fit(self.x, self.y, batch_size=batch, epochs=epochs, verbose=0)
        return history.history["loss"]

    def distance_to_optimum(self):
        return None


def _scale_variables(model):
    # TensorFlow differentiates the tf.Variable behind each; JAX the Keras variables' values.
    unwrap = keras.backend.backend() == "tensorflow"
    return [
        v.value if unwrap and hasattr(v, "value") else v
        for v in model.trainable_variables
        if "scale" in v.path.rsplit("/", 1)[-1]
    ]
