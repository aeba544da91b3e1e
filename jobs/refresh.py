"""spark-submit entry point for scheduled refreshes (docs/operations.md, examples in jobs/schedules/):
`spark-submit --py-files kiln.whl jobs/refresh.py --config CONFIG [--set k=v]`.
"""
import sys

from etl.__main__ import submit_main

if __name__ == "__main__":
    sys.exit(submit_main("refresh", sys.argv[1:]))
