"""Times the layers' noise path against `keras.random.normal` under XLA, on the current backend.

    KERAS_BACKEND=tensorflow python benchmarks/noise_path.py
    KERAS_BACKEND=jax python benchmarks/noise_path.py

313,600 float32 standard Normals per call (the benchmark CNN's largest noise draw),
compiled once (`tf.function(jit_compile=True)` / `jax.jit`), then the candidates timed
in alternation; prints the median milliseconds per call with the interquartile range,
and each candidate's median ratio to `tfp_gradest._backend.normal`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfp_gradest as tge  # noqa: E402
from tfp_gradest import _backend  # noqa: E402

SHAPE = (313_600,)


def _candidates():
    backend = keras.backend.backend()
    candidates = {
        "tfp_gradest._backend.normal": lambda seed: _backend.normal(SHAPE, seed, "float32"),
        "tfp_gradest._backend.random_signs": lambda seed: _backend.random_signs(
            SHAPE, seed, "float32"
        ),
    }
    if backend == "tensorflow":
        import tensorflow as tf

        # TensorFlow's keras.random.normal takes an int or a SeedGenerator, not a seed Tensor.
        generator = keras.random.SeedGenerator(2)
        candidates["keras.random.normal"] = lambda seed: keras.random.normal(SHAPE, seed=generator)

        def compile_fn(fn):
            return tf.function(fn, jit_compile=True, autograph=False)

        seed = keras.random.SeedGenerator(1).next()
    else:
        import jax
        import jax.numpy as jnp

        def rbg_normal(seed):
            key = jax.random.wrap_key_data(
                jnp.concatenate([seed, jnp.zeros([2], jnp.uint32)]), impl="unsafe_rbg"
            )
            return jax.random.normal(key, SHAPE)

        candidates["keras.random.normal"] = lambda seed: keras.random.normal(SHAPE, seed=seed)
        candidates["jax.random.normal (unsafe_rbg key)"] = rbg_normal
        candidates["jax.random.normal (threefry key)"] = lambda seed: jax.random.normal(seed, SHAPE)
        compile_fn = jax.jit
        seed = keras.random.SeedGenerator(1).next()
    return {name: compile_fn(fn) for name, fn in candidates.items()}, seed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    functions, seed = _candidates()
    # One call per run per round; the timer waits for each result on both backends.
    times = tge.diagnostics.interleaved_times(
        list(functions.values()), (seed,), args.repeats, calls_per_repeat=1, min_repeat_seconds=0
    )
    reference = times[0]
    print(f"backend={keras.backend.backend()}, {SHAPE[0]} draws, XLA, {args.repeats} repeats")
    for name, t in zip(functions, times):
        q25, q50, q75 = np.percentile(t * 1e3, [25, 50, 75])
        print(
            f"{name:40s} {q50:8.3f} ms [{q25:.3f}, {q75:.3f}]  "
            f"ratio to _backend.normal {np.median(t / reference):7.2f}"
        )


if __name__ == "__main__":
    main()
