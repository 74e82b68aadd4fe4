"""Extra peak memory of one VIMCO loss-and-gradient call vs K: `tge` against `tfp.vi`.

VIMCO's baselines (and JVI's held-out bounds) are leave-one-out log-mean-exps.
Building them as a `[K, K]` matrix needs memory quadratic in `K`; `tge` computes
them with `leave_one_out_logsumexp` / `leave_one_out_mean` in `O(K)`. Each
measurement runs in a fresh process (peak RSS only grows): after a warm-up call
at `K = 2`, the growth of the process's peak resident set during one eager
loss + gradient call at `K` is its extra peak memory.

    python benchmarks/leave_one_out_memory.py
"""

import os
import resource
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KS = (1000, 4000, 8000)
RUNS = ("tfp.vi vimco", "tge vimco", "tge jvi_dreg")


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KB on Linux


def measure(run, k):
    """Extra peak MB of one loss-and-gradient call of `run` at `K = k` (in this process)."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    import tfp_gradest as tge

    tfd = tfp.distributions
    loc = tf.Variable(0.3)
    q = tfd.Normal(loc, 1.0)

    def target(z):
        return tfd.Normal(0.0, 1.0).log_prob(z)

    def call(k):
        with tf.GradientTape() as tape:
            if run == "tfp.vi vimco":
                loss = tfp.vi.monte_carlo_variational_loss(
                    target, q, importance_sample_size=k, seed=(1, 2),
                    gradient_estimator=tfp.vi.GradientEstimators.VIMCO,
                )  # fmt: skip
            else:
                loss = tge.vi.monte_carlo_variational_loss(
                    target, q, importance_sample_size=k, seed=(1, 2),
                    gradient_estimator=run.split()[1],
                )  # fmt: skip
        return tape.gradient(loss, loc).numpy()

    call(2)
    call(2)
    before = _peak_mb()
    call(k)
    return max(0.0, _peak_mb() - before)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(measure(sys.argv[2], int(sys.argv[3])))
        return
    print("extra peak memory (MB) of one eager VIMCO loss + gradient call, S = 1, scalar latent")
    print(f"{'K':>6} " + " ".join(f"{r:>14}" for r in RUNS) + "   tge/tfp.vi vimco")
    for k in KS:
        mb = [
            float(
                subprocess.run(
                    [sys.executable, __file__, "--one", run, str(k)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()[-1]
            )  # fmt: skip
            for run in RUNS
        ]
        ratio = mb[1] / mb[0] if mb[0] > 0 else float("nan")
        print(f"{k:>6} " + " ".join(f"{m:>14.1f}" for m in mb) + f"   {ratio:>8.2f}")


if __name__ == "__main__":
    main()
