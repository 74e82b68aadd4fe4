"""Gradient estimators as value-preserving surrogate losses.

```python
est = tge.estimators.get("iwae_dreg")  # or tge.estimators.DReG(alpha=0.3), a class, a config
loss = est.loss(target_log_prob_fn, surrogate_posterior,
                sample_size=4, importance_sample_size=16, seed=0)
config = tge.estimators.serialize(est)  # {"class_name": ..., "config": {...}}; get(config)
```

Every estimator runs on TensorFlow and on TensorFlow Probability's JAX substrate with
the same call, chosen from the surrogate's type. On JAX, build the surrogate inside the
function `jax.grad` differentiates (the STL/DReG family stop its parameters themselves),
and pass a JAX PRNG key (or an int):

```python
from tensorflow_probability.substrates import jax as tfp  # tfd = tfp.distributions

def loss_fn(params):
    q = tfd.MultivariateNormalDiag(params["loc"], jnp.exp(params["log_scale"]))
    return est.loss(target_log_prob_fn, q, sample_size=4, importance_sample_size=16, seed=key)

grads = jax.jit(jax.grad(loss_fn))(params)  # the estimator's gradient
```

Importing this package imports neither TensorFlow nor JAX: the substrate
(`tfp_gradest._substrate`) is imported on the first `loss` or `validate`.
"""

from tfp_gradest.estimators.base import (
    GradientEstimator,
    deserialize,
    get,
    names,
    register,
    serialize,
    surrogate_objective,
)
from tfp_gradest.estimators.control_variate import LinearResponseCV
from tfp_gradest.estimators.elbo import STL, Reparameterization
from tfp_gradest.estimators.gdreg import GDReG
from tfp_gradest.estimators.jackknife import JVI, JVIDReG
from tfp_gradest.estimators.multisample import (
    IWAE,
    IWAESTL,
    RWS,
    DReG,
    ImportanceWeightedEstimator,
    IWAEDReG,
    RWSDReG,
)
from tfp_gradest.estimators.score_function import ScoreFunction
from tfp_gradest.estimators.vargrad import VarGrad
from tfp_gradest.estimators.vimco import VIMCO

__all__ = [
    "DReG",
    "GDReG",
    "GradientEstimator",
    "IWAE",
    "IWAEDReG",
    "IWAESTL",
    "ImportanceWeightedEstimator",
    "JVI",
    "JVIDReG",
    "LinearResponseCV",
    "RWS",
    "RWSDReG",
    "Reparameterization",
    "STL",
    "ScoreFunction",
    "VIMCO",
    "VarGrad",
    "deserialize",
    "get",
    "names",
    "register",
    "serialize",
    "surrogate_objective",
]
