"""`python -m training.preflight` as documented: runs the pre-flight checklist, training.planning.preflight."""
import sys

from training.planning.preflight import main

if __name__ == "__main__":
    sys.exit(main())
