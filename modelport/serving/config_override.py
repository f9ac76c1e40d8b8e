"""Triton's model-control load with a ``config`` override, read into ``config.yaml`` fields.

Triton's ``load_model(name, config=JSON)`` loads the model with that model configuration instead of its
``config.pbtxt``. modelport serves what its manifest says, so an override may change how the model is batched
and run, the fields ``config.yaml`` holds: ``max_batch_size``, ``dynamic_batching`` (``max_queue_delay_microseconds``,
``preferred_batch_size``, ``default_queue_policy.max_queue_size`` / ``default_timeout_microseconds``),
``instance_group`` counts and ``version_policy``. It may repeat what the model is (``name``, ``platform``,
``backend``, ``input``, ``output``...: what ``get_model_config`` answered) but not change it; anything else is
refused by name, never ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from modelport.errors import InvalidArgumentError, UnimplementedError
from modelport.serving.modelconfig import ModelConfiguration
from modelport.serving.settings import ModelConfig, VersionPolicy
from modelport.serving.triton import config_json

__all__ = ["OVERRIDABLE", "read_override"]

# what an override may set: Triton's model configuration fields that config.yaml has a counterpart of
OVERRIDABLE = ("max_batch_size", "dynamic_batching", "instance_group", "version_policy")
_QUEUE_POLICY = ("max_queue_size", "default_timeout_microseconds", "timeout_action", "allow_timeout_override")
_BATCHING = ("max_queue_delay_microseconds", "preferred_batch_size", "default_queue_policy")


def read_override(name: str, text: str, current: ModelConfiguration | None) -> dict[str, Any]:
    """The ``config.yaml`` fields a Triton config override sets (validated as a ModelConfig would be).

    ``current``: the model's configuration (None when it is not loaded); the fields the override may only repeat
    are compared with what ``get_model_config`` answers of it."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"failed to load {name!r}: the config override is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise InvalidArgumentError(f"failed to load {name!r}: the config override must be a JSON object")
    fixed = {k: v for k, v in config.items() if k not in OVERRIDABLE}
    _check_fixed(name, fixed, None if current is None else config_json(current))
    fields: dict[str, Any] = {}
    try:
        if "max_batch_size" in config:
            fields["max_batch_size"] = int(config["max_batch_size"])
        fields.update(_batching(_object(config.get("dynamic_batching", {}), "dynamic_batching")))
        if "instance_group" in config:
            fields["instances"] = _instances(config["instance_group"])
        if "version_policy" in config:
            fields["version_policy"] = _version_policy(_object(config["version_policy"], "version_policy"))
        ModelConfig.model_validate(fields)
    except (ValueError, TypeError, ValidationError) as exc:
        raise InvalidArgumentError(f"failed to load {name!r}: the config override is invalid: {exc}") from None
    return fields


def _check_fixed(name: str, given: dict[str, Any], current: Mapping[str, Any] | None) -> None:
    """Fields an override may repeat but not change: they must say what the model already has."""
    if "name" in given and given.pop("name") != name:
        raise InvalidArgumentError(f"failed to load {name!r}: the config override names another model")
    if not given:
        return
    if current is None:
        raise UnimplementedError(
            f"failed to load {name!r}: the config override sets {sorted(given)}, which modelport takes from the "
            f"model's manifest; only {', '.join(OVERRIDABLE)} can be overridden"
        )
    changed = sorted(key for key, value in given.items() if not _same(value, current.get(key)))
    if changed:
        raise UnimplementedError(
            f"failed to load {name!r}: the config override changes {changed}, which modelport takes from the "
            f"model's manifest; only {', '.join(OVERRIDABLE)} can be overridden"
        )


def _same(given: Any, current: Any) -> bool:
    """Whether a repeated field says what the model has: the keys it gives agree (Triton's defaults aside)."""
    if isinstance(given, dict) and isinstance(current, dict):
        return all(_same(v, current.get(k)) for k, v in given.items() if not _is_default(v) or k in current)
    if isinstance(given, list) and isinstance(current, list):
        return len(given) == len(current) and all(_same(g, c) for g, c in zip(given, current, strict=True))
    if isinstance(given, str) and isinstance(current, int):  # protobuf JSON writes int64 as strings
        return given == str(current)
    return bool(given == current)


def _is_default(value: Any) -> bool:
    return value in (None, "", 0, False, [], {}) or value in ("FORMAT_NONE", "TYPE_INVALID")


def _batching(batching: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(batching) - set(_BATCHING))
    if unknown:
        raise ValueError(f"dynamic_batching fields {unknown} have no counterpart here (it has {list(_BATCHING)})")
    fields: dict[str, Any] = {}
    if "max_queue_delay_microseconds" in batching:
        fields["max_queue_delay_ms"] = int(batching["max_queue_delay_microseconds"]) / 1000
    if "preferred_batch_size" in batching:
        fields["preferred_batch_sizes"] = tuple(int(size) for size in batching["preferred_batch_size"])
    policy = _object(batching.get("default_queue_policy", {}), "default_queue_policy")
    unknown = sorted(set(policy) - set(_QUEUE_POLICY[:2]))
    if unknown:
        raise ValueError(f"default_queue_policy fields {unknown} are not supported (only {list(_QUEUE_POLICY[:2])})")
    if "max_queue_size" in policy:
        fields["max_queue_size"] = int(policy["max_queue_size"])
    if "default_timeout_microseconds" in policy:
        fields["timeout_ms"] = int(policy["default_timeout_microseconds"]) / 1000
    return fields


def _instances(groups: Any) -> int:
    if not isinstance(groups, list) or not groups:
        raise ValueError("instance_group must be a non-empty list")
    for group in groups:
        if _object(group, "instance_group").get("kind", "KIND_AUTO") not in ("KIND_AUTO", "KIND_CPU"):
            raise ValueError("instance_group kind: only KIND_CPU or KIND_AUTO (the device is config.yaml's device:)")
    return sum(int(group.get("count", 1)) for group in groups)


def _version_policy(policy: dict[str, Any]) -> VersionPolicy:
    if "latest" in policy:
        return VersionPolicy(latest=int(_object(policy["latest"], "latest").get("num_versions", 1)))
    if "all" in policy:
        return VersionPolicy(all=True)
    if "specific" in policy:
        return VersionPolicy(specific=[int(v) for v in _object(policy["specific"], "specific").get("versions", [])])
    raise ValueError("version_policy must be one of latest, all, specific")


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value
