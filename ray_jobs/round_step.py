"""One synthesis step of a round, as a Ray job (submitted by `raydistill rounds`).

    ray job submit --working-dir . -- python ray_jobs/round_step.py CONFIG {seed,synthesize,mix,filter,demos,select,merge} --round R
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":  # vLLM starts its workers with spawn
    sys.exit(main(["round-step", *sys.argv[1:]]))
