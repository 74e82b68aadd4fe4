"""`python -m tfp_gradest ...`; see `tfp_gradest.cli`."""

import sys

from tfp_gradest.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m tfp_gradest"))
