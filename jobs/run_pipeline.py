"""spark-submit entry point: `spark-submit --packages ... --py-files dist/kiln-0.1.0.zip jobs/run_pipeline.py
--config CONFIG [--set k=v]` (the whole command: docs/cluster.md).

The session comes from spark-submit (or the Databricks cluster); Kiln only adds what is missing.
"""
import sys

from etl.__main__ import submit_main

if __name__ == "__main__":
    sys.exit(submit_main("run", sys.argv[1:]))
