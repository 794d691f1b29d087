"""Shared fixtures: a tiny random teacher, configs, a local Ray cluster, S3 on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# Fake credentials for moto's S3 server; set before Ray starts so its workers inherit them.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray Train's preemption watcher (an actor per training run that polls for draining spot nodes) has no
# node to watch on one machine; without it each of the tests' Ray Train runs starts one process less.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")

from pipeline.config import Config, config_from_dict  # noqa: E402
from pipeline.smoke import build_tiny_teacher  # noqa: E402

LABELS = ["negative", "neutral", "positive"]


def task_dict() -> dict[str, Any]:
    return {
        "name": "sentiment",
        "instruction": "Classify the sentiment of the sentence.",
        "labels": [
            {"name": "negative", "description": "bad news"},
            {"name": "neutral", "description": "neither good nor bad"},
            {"name": "positive", "description": "good news"},
        ],
        "demos": [
            {"text": "Profit rose sharply.", "rationale": "Rising profit is good news.", "label": "positive"},
            {"text": "The firm cut 100 jobs.", "rationale": "Job cuts are bad news.", "label": "negative"},
        ],
    }


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return build_tiny_teacher(tmp_path_factory.mktemp("teacher"), LABELS)


@pytest.fixture
def make_config(tiny_teacher):
    """Build a validated Config for the tiny teacher on CPU; keyword args override sections."""

    def make(input: str, output: str, *, teacher: dict | None = None, data: dict | None = None,
             storage: dict | None = None) -> Config:
        raw = {
            "task": task_dict(),
            "teacher": {
                "model": str(tiny_teacher),
                "samples": 4,
                "temperature": 1.0,
                "max_tokens": 24,
                "batch_size": 16,
                "num_actors": 1,
                "gpus_per_actor": 0,
                "gpu_memory_utilization": 0.2,
                "kv_cache_gib": 0.5,  # 1.2 GB of RAM per engine, not 4.8: two test processes run engines at once
                "max_model_len": 1024,
                "dtype": "float32",
                "enforce_eager": True,  # engines start in half the time
                "engine_in_actor": True,  # and in a fifth of that again
                **(teacher or {}),
            },
            "data": {"input": input, "output": output, **(data or {})},
            "storage": storage or {},
        }
        return config_from_dict(raw)

    return make


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the session's in-process jobs."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP endpoint: moto's server on loopback. Yields its URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    import boto3

    name = "raydistill-" + request.node.name.lower().replace("_", "-")[:40]
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name


VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")  # gone before the next module: ray.init() would join a `ray start` head
def ray_head(tmp_path_factory):
    """A Ray head with the Jobs API, started the README's way (`.venv/bin/ray start --head`, the virtualenv
    not on PATH: a job's bare `python` is not the project's). Yields its address."""
    temp = tmp_path_factory.mktemp("ray-head")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV_BIN)
    env = {**os.environ, "PATH": path, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("VIRTUAL_ENV", None)
    port = dashboard = 0
    try:
        # A head starting while the other test process starts its engines can miss Ray's start-up deadline
        # (measured in CI: "Failed to get node info: Deadline Exceeded"); it is started again, on new ports.
        for _ in range(3):
            port, dashboard = _free_port(), _free_port()
            # Every port of its own, so it can run beside other Ray instances on the machine.
            ports = [f"--{name}={_free_port()}" for name in (
                "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port")]
            started = subprocess.run(
                [str(VENV_BIN / "ray"), "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}",
                 "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=4", f"--temp-dir={temp}",
                 "--disable-usage-stats", *ports],
                env=env, capture_output=True, text=True,
            )
            if started.returncode == 0:
                break
            _stop_head(temp, port)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        _stop_head(temp, port)


def _stop_head(temp: Path, port: int) -> None:
    """Stop only this head's processes: `ray stop` would also stop other Ray instances."""
    for signal in ("-TERM", "-KILL"):  # Ray's processes may ignore SIGTERM while shutting down
        subprocess.run(["pkill", signal, "-f", "--", str(temp)], check=False)
        subprocess.run(["pkill", signal, "-f", "--", f"gcs-address=[0-9.]*:{port}"], check=False)
        time.sleep(3)
