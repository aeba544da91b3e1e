"""`python -m training.memory` as documented: runs the memory planner, training.planning.memory."""
import sys

from training.planning.memory import main

if __name__ == "__main__":
    sys.exit(main())
