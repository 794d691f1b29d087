"""Batch prediction entry point for `ray job submit`.

    ray job submit --working-dir . -- python ray_jobs/predict.py MODEL_DIR INPUT OUTPUT [options]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
