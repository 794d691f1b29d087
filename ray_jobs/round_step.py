"""One synthesis step of a round (submitted by `raydistill rounds`): entry point of a Ray job.

    ray job submit --working-dir . -- sh ray_jobs/run.sh round_step.py CONFIG {seed,synthesize,mix,filter,demos,select,merge} --round R

(``run.sh`` picks the interpreter; see pipeline/jobs_api.py.)
"""

import sys

from _launch import run  # this folder is on sys.path when the script runs

if __name__ == "__main__":  # vLLM starts its workers with spawn
    sys.exit(run("round-step"))
