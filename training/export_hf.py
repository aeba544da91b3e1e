"""`python -m training.export_hf` as documented: runs the Hugging Face export, training.weights.export_hf."""
import sys

from training.weights.export_hf import main

if __name__ == "__main__":
    sys.exit(main())
