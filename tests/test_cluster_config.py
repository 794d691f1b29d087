"""cluster.yaml against Ray's own cluster-config validation (no cloud calls)."""

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def load() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_ray_validation():
    config = load()
    validate_config(prepare_config(copy.deepcopy(config)))
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["resources"]["GPU"] >= 1
    assert config["head_node_type"] == "head"
    assert any('.[gpu]' in command for command in config["setup_commands"])


def test_no_credentials_in_cluster_yaml():
    text = CLUSTER.read_text().lower()
    assert "aws_secret_access_key" not in text and "aws_access_key_id" not in text


@pytest.mark.parametrize(
    "break_it",
    [
        lambda c: c.update(unknown_top_level_key=1),
        lambda c: c.update(max_workers="four"),
        lambda c: c.update(head_node_type="no_such_node_type"),
    ],
)
def test_broken_cluster_yaml_is_rejected(break_it):
    config = load()
    break_it(config)
    with pytest.raises(Exception):
        validate_config(prepare_config(config))
