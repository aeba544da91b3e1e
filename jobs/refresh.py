"""spark-submit entry point for scheduled refreshes (docs/operations.md, examples in jobs/schedules/):
`spark-submit --packages ... --py-files dist/kiln-0.1.0.zip jobs/refresh.py --config CONFIG [--set k=v]`
(the whole command: docs/cluster.md).
"""
import sys

from etl.__main__ import submit_main

if __name__ == "__main__":
    sys.exit(submit_main("refresh", sys.argv[1:]))
