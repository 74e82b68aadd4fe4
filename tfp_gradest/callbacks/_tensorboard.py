"""TensorBoard scalars for the callbacks, on any Keras backend (as Keras's own TensorBoard
callback does, this uses `tf.summary`, imported only when a log directory is given)."""

import warnings

__all__ = ["ScalarWriter"]


class ScalarWriter:
    """Writes `{tag: float}` at a step to TensorBoard event files in `log_dir`.

    `tf.summary` writes the event files whichever the Keras backend is; without
    TensorFlow installed this warns once and writes nothing (the values are still in
    `logs`, `History` and the callback's `history`).
    """

    def __init__(self, log_dir):
        try:
            import tensorflow as tf
        except ImportError:
            warnings.warn(
                f"TensorBoard scalars need TensorFlow (`pip install tensorflow-cpu`); "
                f"nothing is written to log_dir={log_dir!r}. The values are still in `logs` "
                "and `History`.",
                stacklevel=3,
            )
            self._tf, self._writer = None, None
            return
        self._tf = tf
        self._writer = tf.summary.create_file_writer(log_dir)

    def write(self, values, step):
        if self._writer is None:
            return
        with self._writer.as_default():
            for tag, value in values.items():
                self._tf.summary.scalar(tag, value, step=step)

    def flush(self):
        if self._writer is not None:
            self._writer.flush()
