"""What every raydistill job sent through Ray's Jobs API shares: the client, the entrypoint, the
job's environment. Used by ``raydistill submit`` and by the rounds orchestrator's steps.

The entrypoint runs ``ray_jobs/run.sh``, which picks the job's interpreter: the submitter's
(``$RAYDISTILL_PYTHON``, sent with the job) where it exists on the node running the job (a head on
the submitter's machine: the project's virtualenv), else the node's ``python3`` (a cluster from
``cluster.yaml``, whose set-up installs the project there). A bare ``python`` would be the
system's interpreter on a head started from a virtualenv without activating it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pipeline.cluster import VERBOSE_ENV, verbose
from pipeline.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PYTHON_ENV = "RAYDISTILL_PYTHON"


class JobsApiError(RuntimeError):
    """The Jobs API kept failing for longer than allowed."""


def job_env(endpoint_url: Optional[str] = None, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Environment variables a job gets: this interpreter (see the module's docstring), the S3 endpoint
    when the config names one, and verbosity as here."""
    env = {"TOKENIZERS_PARALLELISM": "false", PYTHON_ENV: sys.executable}
    if verbose():
        env[VERBOSE_ENV] = "1"
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return {**env, **(extra or {})}


def job_client(address: Optional[str], api_timeout_s: float = 600.0) -> Any:
    """A Jobs API client for ``address``, else $RAY_ADDRESS, else the local head's default.

    ``local`` (no Jobs API, every step in the caller's process) is :class:`pipeline.local_jobs.LocalJobs`,
    which the ``raydistill`` command makes: it runs the command's own functions.
    """
    from ray.job_submission import JobSubmissionClient

    if address == "local":
        raise ConfigError("rounds.address: local runs every step in the orchestrator's process, which "
                          "`raydistill rounds` sets up; from Python, pass client=LocalJobs(pipeline.cli.main)")
    address = address or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    use_ray_auth_token()
    # The client checks the dashboard when made: a head just restarting, or a dashboard answering errors
    # for a moment, is waited for (as every later call of the rounds orchestrator is).
    deadline, wait = time.time() + api_timeout_s, 1.0
    while True:
        try:
            return JobSubmissionClient(address)
        except (ConnectionError, RuntimeError, OSError) as err:
            if time.time() > deadline:
                raise JobsApiError(f"the Jobs API at {address} did not answer for {api_timeout_s:.0f}s: {err}") from err
            print(f"[jobs] the Jobs API at {address} failed ({str(err)[:200]}); retrying in {wait:.0f}s",
                  file=sys.stderr, flush=True)
            time.sleep(wait)
            wait = min(wait * 2, 30.0)


def address_of(client: Any) -> str:
    """The Jobs API address a client talks to (``local`` for :class:`pipeline.local_jobs.LocalJobs`)."""
    return getattr(client, "_address", "?")


def use_ray_auth_token() -> None:
    """Send Ray's auth token when one exists (``ray start`` enables token auth once a token is
    there), as the ``ray job`` CLI does; RAY_AUTH_MODE set by the user wins."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
