"""Distillation job: entry point of a Ray job.

    raydistill submit distill CONFIG [--smoke]
    ray job submit --working-dir . -- sh ray_jobs/run.sh distill.py CONFIG [--smoke]

(``run.sh`` picks the interpreter; see pipeline/jobs_api.py.)
"""

import sys

from _launch import run  # this folder is on sys.path when the script runs

if __name__ == "__main__":
    sys.exit(run("distill"))
