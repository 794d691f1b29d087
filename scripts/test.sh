#!/usr/bin/env bash
# The whole test suite, in two pytest processes side by side, each with about half of the slow
# tests (Ray jobs, Ray Train runs, vLLM engines): tests/test_rounds.py, tests/test_distill.py and
# tests/test_task_types_jobs.py in one, everything else (FreeAL's rounds run among it) in the
# other. The same tests as `.venv/bin/python -m pytest tests`, in about two thirds of the time on
# 2 cores. Extra arguments go to both pytest runs. Fails if either run fails.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
# The Label Studio round trip is part of the suite here: it fails, not skips, without Label Studio.
export RAYDISTILL_REQUIRE_LABEL_STUDIO=1
FIRST=(tests/test_rounds.py tests/test_distill.py tests/test_task_types_jobs.py)
# The ten slowest tests of each run are listed at the end: where CI's time goes. A run still going
# after 30 minutes (twice its usual time: something hangs) is interrupted, so that pytest prints the
# failures so far and where each thread stood (faulthandler_timeout in pyproject.toml) before CI's own
# limit cuts everything short.
LIMIT=(timeout --signal=INT --kill-after=120 1800)
"${LIMIT[@]}" "$PY" -m pytest "${FIRST[@]}" --durations=10 "$@" > >(sed -u 's/^/[rounds+distill] /') 2>&1 &
first=$!
"${LIMIT[@]}" "$PY" -m pytest tests "${FIRST[@]/#/--ignore=}" --durations=10 "$@"
rest=$?
wait "$first"
first_status=$?
echo "pytest: ${FIRST[*]} exit $first_status, the other tests exit $rest"
[ "$rest" -eq 0 ] && [ "$first_status" -eq 0 ]
