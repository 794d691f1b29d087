#!/usr/bin/env bash
# The whole test suite, in two pytest processes side by side: the rounds end-to-end tests
# (tests/test_rounds.py, which mostly wait on Ray jobs submitted to their own Ray head) and
# everything else. The same tests as `.venv/bin/python -m pytest tests`, in about two thirds of
# the time on 2 cores. Extra arguments go to both pytest runs. Fails if either run fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# The ten slowest tests of each run are listed at the end: where CI's time goes.
"$PY" -m pytest tests/test_rounds.py --durations=10 "$@" > >(sed -u 's/^/[test_rounds] /') 2>&1 &
rounds=$!
"$PY" -m pytest tests --ignore=tests/test_rounds.py --durations=10 "$@"
rest=$?
wait "$rounds"
rounds_status=$?
echo "pytest: tests/test_rounds.py exit $rounds_status, the other tests exit $rest"
[ "$rest" -eq 0 ] && [ "$rounds_status" -eq 0 ]
