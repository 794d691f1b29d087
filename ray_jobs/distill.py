"""Distillation job entry point for `ray job submit`.

    ray job submit --working-dir . -- python ray_jobs/distill.py CONFIG [--smoke]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["distill", *sys.argv[1:]]))
