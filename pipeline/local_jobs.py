"""Rounds without a Jobs API: each step run in the orchestrator's own process (``rounds.address: local``).

:class:`LocalJobs` answers the few calls the rounds orchestrator makes of Ray's
``JobSubmissionClient`` (submit, status, logs, stop, list). ``submit_job`` runs
the step's entrypoint (``ray_jobs/<job>.py ARGS``, see :mod:`pipeline.jobs_api`: the same
``raydistill`` command a job would run) at once, in this process, against
the local Ray cluster that the first step starts (or ``$RAY_ADDRESS``'s).
Every step shares the one driver: no job process to start, no working dir to
upload, and Ray's task workers are reused from step to step.

For a laptop or one machine. A step's output goes to the console as it runs
and is kept for the step's failure report. What a killed orchestrator leaves
is what a lost cluster leaves under the Jobs API: its steps' jobs are unknown
(``does not exist``) and the next run submits them again; every step's output
is committed atomically or rewritten whole, as under the Jobs API.
"""

from __future__ import annotations

import io
import os
import sys
import traceback
from typing import Any, AsyncIterator, Callable, Optional

from pipeline.entrypoints import parse_entrypoint

# ray_jobs/<script> -> the raydistill command it runs.
COMMANDS = {"label.py": "label", "distill.py": "distill", "predict.py": "predict", "round_step.py": "round-step"}


class _Status:
    def __init__(self, value: str):
        self.value = value


class _Tee(io.TextIOBase):
    """Writes to the console and keeps a copy."""

    def __init__(self, console: Any, copy: io.StringIO):
        self.console, self.copy = console, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.console.write(text)

    def flush(self) -> None:
        self.console.flush()


class LocalJobs:
    """A ``JobSubmissionClient`` look-alike that runs each job in this process, synchronously."""

    _address = "local"

    def __init__(self, run: Callable[[list[str]], int]) -> None:
        self.run = run  # runs one raydistill command: pipeline.cli.main
        self.jobs: dict[str, dict[str, Any]] = {}

    def submit_job(self, *, entrypoint: str, submission_id: str, runtime_env: Optional[dict] = None,
                   metadata: Optional[dict] = None, **_: Any) -> str:
        if submission_id in self.jobs:
            raise RuntimeError(f"Request failed with status code 400: Job {submission_id} already exists.")
        try:
            script, args = parse_entrypoint(entrypoint)
        except ValueError:
            script, args = "", []
        if script not in COMMANDS:
            raise ValueError(
                f"local rounds run ray_jobs/{{{','.join(COMMANDS)}}} entrypoints only, got {entrypoint!r}")
        log = io.StringIO()
        record = {"submission_id": submission_id, "entrypoint": entrypoint, "metadata": metadata or {},
                  "status": "RUNNING", "log": log}
        self.jobs[submission_id] = record
        env_vars = (runtime_env or {}).get("env_vars", {})
        saved_env = {key: os.environ.get(key) for key in env_vars}
        os.environ.update(env_vars)
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(stdout, log), _Tee(stderr, log)
        try:
            code = self.run([COMMANDS[script], *args])
        except Exception:  # noqa: BLE001 - the step failed; its traceback is its log's end, as in a job
            log.write(traceback.format_exc())
            code = 1
        finally:
            sys.stdout, sys.stderr = stdout, stderr
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        record["status"] = "SUCCEEDED" if code == 0 else "FAILED"
        return submission_id

    def _job(self, submission_id: str) -> dict[str, Any]:
        if submission_id not in self.jobs:  # e.g. submitted by an orchestrator that was killed
            raise RuntimeError(f"Request failed with status code 404: Job {submission_id} does not exist.")
        return self.jobs[submission_id]

    def get_job_status(self, submission_id: str) -> _Status:
        return _Status(self._job(submission_id)["status"])

    def get_job_logs(self, submission_id: str) -> str:
        return self._job(submission_id)["log"].getvalue()

    async def tail_job_logs(self, submission_id: str) -> AsyncIterator[str]:
        """Nothing: a local step's output went to the console as it ran."""
        self._job(submission_id)
        return
        yield  # an async generator

    def stop_job(self, submission_id: str) -> bool:
        return False  # a local job has ended by the time anyone can ask

    def list_jobs(self) -> list[Any]:
        return [type("Job", (), {"submission_id": job["submission_id"], "metadata": job["metadata"],
                                 "status": job["status"]})() for job in self.jobs.values()]
