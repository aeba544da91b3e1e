"""`python -m training.consolidate` as documented: runs the consolidation, training.weights.consolidate."""
import sys

from training.weights.consolidate import main

if __name__ == "__main__":
    sys.exit(main())
