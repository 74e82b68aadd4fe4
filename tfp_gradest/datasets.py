"""Image data for the notebooks: MNIST when it can be had, else scikit-learn's bundled digits —
never silently."""

import os
import socket

__all__ = ["load_images"]


def load_images(prefer="mnist", num_train=None, seed=0, verbose=True):
    """Returns `(x_train, y_train, x_test, y_test, name)`, pixels in [0, 1], images flattened.

    Tries `keras.datasets.mnist` (its local cache first, then a download with a
    5-second timeout); if that fails (e.g. offline) falls back to
    scikit-learn's 8×8 digits, which ship with the package (1,797 images,
    stratified 80/20 split). The choice is printed.

    Args:
      prefer: `"mnist"` or `"digits"`.
      num_train: optional Python `int`, keep the first `num_train` training images.
      seed: numpy seed for the digits split.
      verbose: print which data set is used and why.
    """
    if prefer not in ("mnist", "digits"):
        raise ValueError(f"`prefer` must be 'mnist' or 'digits'. Received: prefer={prefer!r}")
    data, reason = None, "prefer='digits'"
    if prefer == "mnist":
        data, reason = _try_mnist()
    if data is None:
        data, name = _digits(seed), "digits"
        if verbose:
            print(f"Data: scikit-learn digits (8x8, bundled) — MNIST unavailable: {reason}")
    else:
        name = "mnist"
        if verbose:
            print(f"Data: MNIST (28x28) — {reason}")
    x_train, y_train, x_test, y_test = data
    if num_train is not None:
        x_train, y_train = x_train[:num_train], y_train[:num_train]
    return x_train, y_train, x_test, y_test, name


def _try_mnist():
    import keras

    cached = os.path.join(os.path.expanduser("~"), ".keras", "datasets", "mnist.npz")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    except Exception as error:  # offline, blocked, or a broken cache: fall back, and say why
        return None, f"{type(error).__name__}: {str(error)[:80]}"
    finally:
        socket.setdefaulttimeout(previous)
    flat = [x.reshape(len(x), -1).astype("float32") / 255.0 for x in (x_train, x_test)]
    how = "from the local cache" if os.path.exists(cached) else "downloaded"
    return (flat[0], y_train.astype("int32"), flat[1], y_test.astype("int32")), how


def _digits(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=seed, stratify=y
    )
    return x_train, y_train, x_test, y_test
