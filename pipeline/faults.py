"""Faults injected on purpose, for the fault matrix (bench/fault_matrix.py) and the tests.

The faults are JSON in ``$RAYDISTILL_INJECT_FAULTS``, read by a job's driver and handed to its
actors and workers. Unset, nothing is injected. Keys:

- ``engine_error`` (labelling): a row whose text contains this string reaches the engine with a
  prompt longer than its context, which the engine rejects (a request-level engine error).
- ``engine_death`` (labelling): the engine dies while a row whose text contains this string is in
  flight: its process is killed (SIGKILL) when it has one, else the engine loop stops on an error.
- ``engine_death_once``: a file path; with it, only the first such death happens.
- ``train_worker_death`` (distillation): ``{"epoch": E, "batch": B, "once": PATH, "after_s": S}``:
  the rank-0 training worker's process exits S seconds (default 5) after batch B of epoch E
  (counted from 0 and 1), as a reclaimed spot node's would; ``once`` as above. Ray Train registers
  a checkpoint when its controller next polls the workers (every 2 s), so a worker lost within
  moments of a checkpoint resumes from the one before it; the wait makes the test deterministic.
"""

from __future__ import annotations

import json
import os
from typing import Any

FAULTS_ENV = "RAYDISTILL_INJECT_FAULTS"


def injected_faults() -> dict[str, Any]:
    raw = os.environ.get(FAULTS_ENV)
    return json.loads(raw) if raw else {}


def first_time(once: str | None) -> bool:
    """Whether a fault limited to once by the file ``once`` (None: no limit) is due; marks it done."""
    if not once:
        return True
    try:
        with open(once, "x"):
            return True
    except FileExistsError:
        return False
