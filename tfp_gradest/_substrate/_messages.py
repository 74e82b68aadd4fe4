"""The target-output checks' messages, shared by both substrates (imports nothing)."""


def dtype_message(target, surrogate):
    return (
        f"`target_log_prob_fn` returned {target} log densities, but "
        f"`surrogate_posterior` gives {surrogate} ones: both must use the "
        "same float dtype. Build the surrogate's parameters in the target's dtype, or cast "
        f"inside the target. Received: target dtype={target}, "
        f"surrogate dtype={surrogate}"
    )


def shape_message(expected, received, num_samples):
    return (
        f"`target_log_prob_fn` must return one log density per sample, of shape "
        f"[sample_size * importance_sample_size] + batch_shape = {expected} (the samples' "
        f"leading axis of size {num_samples}, then `surrogate_posterior`'s batch shape). Did "
        "the target sum over the sample axis, or forget to sum over the event axes? "
        f"Received: output of shape {received}"
    )
