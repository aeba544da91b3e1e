"""`python -m training.plan` as documented: runs the compute planner, training.planning.plan."""
import sys

from training.planning.plan import main

if __name__ == "__main__":
    sys.exit(main())
