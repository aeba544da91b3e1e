"""spark-submit entry point: `spark-submit --py-files kiln.whl jobs/run_pipeline.py --config CONFIG [--set k=v]`.

The session comes from spark-submit (or the Databricks cluster); Kiln only adds what is missing.
"""
import sys

from etl.__main__ import submit_main

if __name__ == "__main__":
    sys.exit(submit_main("run", sys.argv[1:]))
