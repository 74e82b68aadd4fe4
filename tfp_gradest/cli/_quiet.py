"""Keeping TensorFlow's log lines off the terminal: file descriptor 2 and Python's loggers."""

import contextlib
import os
import sys
import tempfile

__all__ = ["quiet_tensorflow"]


@contextlib.contextmanager
def quiet_tensorflow(verbose):
    """Keeps TensorFlow's native (C++) log lines off the terminal unless `verbose`.

    `TF_CPP_MIN_LOG_LEVEL` is set before TensorFlow is imported, but lines written
    before absl's logging starts (oneDNN, CUDA stubs, `cuInit` on a machine without
    a GPU) ignore it; so file descriptor 2 goes to a temporary file while Python's
    own `sys.stderr` (progress, warnings, errors) stays on the terminal. If the run
    crashes (anything but an `error:` exit or Ctrl-C, which say all there is to
    say in one line), the captured lines are printed after all.
    """
    if verbose:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    terminal = os.dup(2)
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1)
        crashed = False
        try:
            _quiet_python_loggers()
            yield
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            crashed = True
            raise
        finally:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = python_stderr
            os.dup2(terminal, 2)
            os.close(terminal)
            if crashed:
                log.seek(0)
                captured = log.read().decode(errors="replace")
                if captured.strip():
                    python_stderr.write("TensorFlow's log (hidden unless --verbose):\n" + captured)


def _quiet_python_loggers():
    import logging

    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
