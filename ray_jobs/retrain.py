"""Retraining job (one periodic run): entry point of a Ray job.

    raydistill submit retrain CONFIG [--period PARTITION]
    ray job submit --working-dir . -- sh ray_jobs/run.sh retrain.py CONFIG [--period PARTITION]

(``run.sh`` picks the interpreter; see pipeline/jobs_api.py. Scheduling: docs/retraining.md.)
"""

import sys

from _launch import run  # this folder is on sys.path when the script runs

if __name__ == "__main__":
    sys.exit(run("retrain"))
