"""`python -m training.explain_step` as documented: a step's documents, ranked by loss (training.run.explain)."""
import sys

from training.run.explain import main

if __name__ == "__main__":
    sys.exit(main())
