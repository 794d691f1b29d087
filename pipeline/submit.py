"""``raydistill submit JOB CONFIG``: a job sent to a Ray cluster through its Jobs API, as it would run here.

What a bare ``ray job submit`` gets wrong, done for the user:

- **Paths.** Relative paths in the config are made absolute against the directory the command
  runs in, so a job writes where a local run would, never into its own temporary working
  directory (which vanishes with the Ray session). Inside a job, a relative path left in a
  config is an error naming its key (:func:`refuse_relative_paths`).
- **Interpreter.** The job runs with this interpreter where the head is on this machine, else
  with the node's ``python3`` (see :mod:`pipeline.jobs_api`).
- **Authentication.** Ray's token (``~/.ray/auth_token`` or ``$RAY_AUTH_TOKEN``) is sent when
  there is one, without ``RAY_AUTH_MODE`` to set.
- **What is uploaded.** The library, the entry points and the config with its paths resolved:
  a few hundred kB, whatever else lies in the project folder.

It prints the job's id and how to follow it, then follows its log to the end (``--no-wait``:
returns at once) and exits with the job's outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, dump_config, load_config, relative_paths, with_absolute_paths
from pipeline.entrypoints import entrypoint
from pipeline.jobs_api import PROJECT_ROOT, address_of, job_client, job_env

# raydistill command -> its entry point in ray_jobs/
JOBS = {"label": "label.py", "distill": "distill.py", "rounds": "rounds.py", "retrain": "retrain.py"}
SMOKE_ROOT_ENV = "RAYDISTILL_SMOKE_ROOT"
CONFIG_NAME = "raydistill-submitted.yaml"


def submit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raydistill submit",
        description="Run a job on a Ray cluster through its Jobs API, with this config's paths, this "
                    "interpreter where the head is local, and Ray's auth token.")
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("config", help="YAML config file (local path or s3:// URI)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one config value (YAML); repeatable")
    parser.add_argument("--smoke", action="store_true", help="the job's smoke mode (tiny random models)")
    parser.add_argument("--period", default=None, help="retrain: only this partition (default: every new one)")
    parser.add_argument("--address", default=None,
                        help="the Jobs API (default $RAY_ADDRESS, else http://127.0.0.1:8265)")
    parser.add_argument("--no-wait", action="store_true", help="return once the job is submitted")
    return parser


def submit_main(argv: list[str] | None = None) -> int:
    args = submit_parser().parse_args(argv)

    if args.period and args.job != "retrain":
        raise ConfigError("--period: only the retrain job takes a period")
    if args.smoke and args.job == "retrain":
        raise ConfigError("--smoke: the retrain job has no smoke mode (tests/test_retrain.py runs it on tiny models)")
    config = with_absolute_paths(load_config(args.config, args.set), Path.cwd())
    smoke_root = str((Path.cwd() / "runs" / "smoke").resolve())
    client = job_client(args.address)
    submission_id = f"raydistill-{args.job}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="raydistill-submit-") as staging:
        working_dir = stage(Path(staging), config)
        client.submit_job(
            entrypoint=entrypoint(JOBS[args.job], [CONFIG_NAME, *(["--smoke"] if args.smoke else []),
                                                   *(["--period", args.period] if args.period else [])]),
            submission_id=submission_id,
            runtime_env={"working_dir": str(working_dir),
                         "env_vars": job_env(config.storage.endpoint_url, {SMOKE_ROOT_ENV: smoke_root})},
            metadata={"raydistill_job": args.job, "config": str(args.config)},
        )
    address = address_of(client)
    # The `ray job` CLI sends Ray's token only when told to (RAY_AUTH_MODE=token).
    auth = "RAY_AUTH_MODE=token " if (os.environ.get("RAY_AUTH_TOKEN") or
                                      (Path.home() / ".ray" / "auth_token").exists()) else ""
    print(f"submitted {args.job} job {submission_id} to {address}")
    print(f"follow it: {auth}ray job logs --follow --address {address} {submission_id}\n"
          f"stop it:   {auth}ray job stop --address {address} {submission_id}", flush=True)
    if args.no_wait:
        return 0
    return follow(client, submission_id)


def stage(folder: Path, config: Config) -> Path:
    """A working dir for the job: the library, the entry points, and the config (paths resolved)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("pipeline", "ray_jobs"):
        shutil.copytree(PROJECT_ROOT / part, folder / part, ignore=ignore)
    (folder / CONFIG_NAME).write_text(dump_config(config), encoding="utf-8")
    return folder


def follow(client: Any, submission_id: str) -> int:
    """Print the job's log as it grows; 0 if it succeeded, else 1."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            print(chunk, end="", flush=True)

    try:
        asyncio.run(tail())
    except Exception as err:  # noqa: BLE001 - the stream broke; the job's status still decides
        print(f"[submit] the log stream ended early ({err}); waiting for the job to end", file=sys.stderr)
    while True:
        status = str(client.get_job_status(submission_id).value)
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    print(f"[submit] job {submission_id}: {status}", flush=True)
    return 0 if status == "SUCCEEDED" else 1


def refuse_relative_paths(config: Config) -> None:
    """In a job with an uploaded working dir, a relative path would land in that temporary folder."""
    if not in_uploaded_working_dir():
        return
    found = relative_paths(config)
    if found:
        key, value = found[0]
        raise ConfigError(
            f"{key}: the relative path {value!r} would resolve inside this job's temporary working directory "
            f"({os.getcwd()}), which is deleted with the Ray session; use an absolute path or s3://, or submit "
            "with `raydistill submit`, which resolves relative paths against the directory you submit from")


def in_uploaded_working_dir() -> bool:
    """Whether this process is a Ray job's entrypoint that runs in an uploaded working dir."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return False
    try:
        return bool(json.loads(raw).get("runtime_env", {}).get("working_dir"))
    except ValueError:
        return False


def smoke_root() -> Path:
    """Where smoke mode builds its tiny models and writes: ``runs/smoke``, or what ``submit`` sent."""
    root = os.environ.get(SMOKE_ROOT_ENV)
    if root:
        return Path(root)
    if in_uploaded_working_dir():
        raise ConfigError(
            f"--smoke: its outputs would go to runs/smoke inside this job's temporary working directory; set "
            f"{SMOKE_ROOT_ENV} to an absolute path in the job's env_vars, or submit with `raydistill submit`")
    return Path("runs/smoke")
