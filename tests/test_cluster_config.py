"""cluster.yaml against Ray's own cluster-config validation, offline.

`ray up` runs prepare_config (merge the AWS defaults.yaml, split setup commands,
fill per-type worker bounds), then asks EC2 for instance resources, then
validate_config (ray-schema.json plus cross-field checks). The EC2 step is the
only one that talks to AWS; it is skipped here, which is why the GPU worker
declares its resources itself.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach AWS (or anything else) fails the test."""

    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f"cluster config validation tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def ray_validate(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_ray_validation():
    config = load()
    prepared = ray_validate(config)

    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"
    head = prepared["head_node_type"]
    node_types = prepared["available_node_types"]
    assert node_types[head]["resources"].get("GPU", 0) == 0, "the head is the CPU node"

    # The GPU worker group: scales from zero, at least one GPU per node, declared
    # explicitly since Ray only infers it by calling the EC2 API.
    gpu_types = [name for name, t in node_types.items() if t["resources"].get("GPU", 0) >= 1]
    assert gpu_types and head not in gpu_types
    for name in gpu_types:
        assert node_types[name]["min_workers"] == 0
        assert 1 <= node_types[name]["max_workers"] <= prepared["max_workers"]


def test_setup_syncs_the_repo_and_installs_the_gpu_extra():
    config = load()
    assert config["file_mounts"] == {"~/raydistill": "."}
    prepared = ray_validate(config)
    # prepare_config merges setup_commands into what head and workers actually run.
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = " && ".join(prepared[key])
        assert "cd ~/raydistill" in commands
        assert re.search(r"pip install (\S+ )*-e \"?\.\[gpu\]\"?", commands), commands
    assert prepared["head_start_ray_commands"] and prepared["worker_start_ray_commands"]


def test_the_jobs_api_listens_on_the_head_s_loopback_only():
    head = " ".join(yaml.safe_load(CLUSTER.read_text())["head_start_ray_commands"])
    assert re.search(r"ray start --head\b", head)
    hosts = re.findall(r"--dashboard-host[= ](\S+)", head)
    assert hosts == ["127.0.0.1"], hosts  # 0.0.0.0 would let the VPC submit jobs with the node's S3 rights


def test_no_aws_credentials_in_cluster_yaml():
    text = CLUSTER.read_text()
    lowered = text.lower()
    for name in ("aws_secret_access_key", "aws_access_key_id", "aws_session_token", "secret_key"):
        assert name not in lowered
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), "an access key id"
    assert not re.search(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])", text), "a secret-like key"
    assert "aws_credentials" not in load()["provider"]


@pytest.mark.parametrize(
    "break_it, error",
    [
        (lambda c: c.update(unknown_top_level_key=1), jsonschema.ValidationError),
        (lambda c: c.update(max_workers="4"), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["gpu_worker"].update(min_worker=0), jsonschema.ValidationError),
        (
            lambda c: c["available_node_types"]["gpu_worker"]["resources"].update(GPU="1"),
            jsonschema.ValidationError,
        ),
        (lambda c: c["available_node_types"]["gpu_worker"].pop("resources"), jsonschema.ValidationError),
        (lambda c: c.update(head_node_type="no_such_node_type"), ValueError),
    ],
    ids=["unknown-key", "max-workers-string", "node-type-typo", "gpu-string", "no-resources", "bad-head"],
)
def test_broken_cluster_yaml_is_rejected(break_it, error):
    config = load()
    ray_validate(config)  # the unbroken copy passes...
    break_it(config)
    with pytest.raises(error):  # ...and the broken one fails the same validation
        ray_validate(config)
