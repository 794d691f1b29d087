"""What every entry point in ray_jobs/ does: find the library, then run one ``raydistill`` command."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the uploaded working dir


def run(command: str) -> int:
    sys.path.insert(0, str(ROOT))
    try:
        from pipeline.cli import main
    except ImportError as err:  # a node's Python without the project's dependencies
        print(f"raydistill job: this Python ({sys.executable}) lacks the project's dependencies ({err}). "
              "Submit with `raydistill submit`, which runs the job with your interpreter where the head is on "
              "your machine; or start the head from the project's virtualenv (.venv/bin/ray start --head) and "
              "name that interpreter in the entrypoint; on a cluster, install the project on every node "
              "(cluster.yaml's setup_commands do).", file=sys.stderr)
        return 1
    return main([command, *sys.argv[1:]])
