"""spark-submit entry point: `spark-submit --packages ... --py-files dist/kiln-0.1.0.zip jobs/run_pipeline.py
--config CONFIG [--set k=v]` (the whole command: docs/cluster.md).

The session comes from spark-submit (or the Databricks cluster); Kiln only adds what is missing.
"""
import sys

try:
    from etl.__main__ import submit_main
except ModuleNotFoundError as missing:  # spark-submit without Kiln's code: say how to ship it, in one line
    if missing.name not in ("etl", "shards"):
        raise
    sys.exit(f"error: Kiln's code is not on this Python's path ({missing}): pass --py-files dist/kiln-0.1.0.zip "
             "to spark-submit (`make wheel` builds it), or install dist/kiln-0.1.0-py3-none-any.whl on the cluster")

if __name__ == "__main__":
    sys.exit(submit_main("run", sys.argv[1:]))
