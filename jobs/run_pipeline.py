"""spark-submit entry point: `spark-submit --py-files kiln.whl jobs/run_pipeline.py --config CONFIG [--set k=v]`.

The session comes from spark-submit (or the Databricks cluster); Kiln only adds what is missing.
"""
import sys

from etl.__main__ import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] == "--config":
        argv = argv[1:]
    sys.exit(main(["run", *argv]))
