"""`python -m tfp_gradest ...`; see `tfp_gradest.cli`."""

from tfp_gradest.cli import main

if __name__ == "__main__":
    main()
