"""`python -m training.sweep` as documented: runs the scaling sweep, training.planning.sweep."""
import sys

from training.planning.sweep import main

if __name__ == "__main__":
    sys.exit(main())
