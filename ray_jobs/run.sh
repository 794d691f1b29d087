#!/bin/sh
# Runs a raydistill job entry point (ray_jobs/<script>.py ARGS) with the right interpreter:
# the submitter's ($RAYDISTILL_PYTHON, sent by `raydistill submit` and by the rounds orchestrator)
# where it exists on this node (a head on the submitter's machine: the project's virtualenv),
# else this node's python3 (a cluster from cluster.yaml, whose set-up installs the project there).
#     sh ray_jobs/run.sh label.py CONFIG [--smoke]
script="$1"
shift
here="$(dirname "$0")"
for python in "$RAYDISTILL_PYTHON" python3 python; do
    if [ -n "$python" ] && command -v "$python" >/dev/null 2>&1; then
        exec "$python" "$here/$script" "$@"
    fi
done
echo "raydistill job: no Python interpreter on this node (tried \$RAYDISTILL_PYTHON, python3, python)" >&2
exit 127
