"""Triton's load-time config override read into config.yaml's fields (serving/config_override.py)."""

from __future__ import annotations

import json

import pytest

from modelport.errors import InvalidArgumentError, UnimplementedError
from modelport.serving.config_override import read_override
from modelport.serving.settings import VersionPolicy


def test_batching_instances_and_version_policy_map_to_config_yaml_fields():
    override = {
        "name": "m",
        "max_batch_size": "16",  # protobuf JSON writes int64 as strings
        "dynamic_batching": {
            "max_queue_delay_microseconds": 2500,
            "preferred_batch_size": [4, 8],
            "default_queue_policy": {"max_queue_size": 32, "default_timeout_microseconds": 1_000_000},
        },
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}, {"count": 1}],
        "version_policy": {"specific": {"versions": [1, 3]}},
    }
    assert read_override("m", json.dumps(override), None) == {
        "max_batch_size": 16,
        "max_queue_delay_ms": 2.5,
        "preferred_batch_sizes": (4, 8),
        "max_queue_size": 32,
        "timeout_ms": 1000.0,
        "instances": 3,
        "version_policy": VersionPolicy(specific=(1, 3)),
    }
    assert read_override("m", '{"version_policy": {"latest": {"num_versions": 2}}}', None) == {
        "version_policy": VersionPolicy(latest=2)
    }


@pytest.mark.parametrize(
    ("text", "error", "says"),
    [
        ('"parameters": {"config": {{"max_batch_size": "16"}}}', InvalidArgumentError, "not valid JSON"),
        ("[1]", InvalidArgumentError, "must be a JSON object"),
        ('{"name": "other"}', InvalidArgumentError, "names another model"),
        ('{"max_batch_size": -1}', InvalidArgumentError, "invalid"),
        ('{"dynamic_batching": {"priority_levels": 2}}', InvalidArgumentError, "priority_levels"),
        ('{"instance_group": [{"kind": "KIND_GPU"}]}', InvalidArgumentError, "KIND_CPU"),
        ('{"platform": "onnxruntime_onnx"}', UnimplementedError, "['platform']"),  # not loaded: nothing to compare
    ],
)
def test_what_cannot_be_applied_is_refused_by_name(text, error, says):
    with pytest.raises(error) as refused:
        read_override("m", text, None)
    assert "failed to load 'm'" in refused.value.message and says in refused.value.message
