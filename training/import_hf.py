"""`python -m training.import_hf` as documented: runs the Hugging Face import, training.weights.import_hf."""
import sys

from training.weights.import_hf import main

if __name__ == "__main__":
    sys.exit(main())
