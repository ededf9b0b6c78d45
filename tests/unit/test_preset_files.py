"""The presets in configs/ state only what differs from the schema's defaults, each value once per job."""
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from rlsys.config.schema import JobConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULTS = OmegaConf.to_container(OmegaConf.structured(JobConfig))


def leaves(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def schema_value(key: str):
    node = DEFAULTS
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError
        node = node[part]
    return node


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_presets_set_only_what_differs_from_the_schema(path):
    # env presets, and others marked `@package _global_`, set any key
    any_key = path.parent in (CONFIGS, CONFIGS / "env") or path.read_text().startswith("# @package _global_")
    group = "" if any_key else f"{path.parent.name}."
    data = yaml.safe_load(path.read_text()) or {}
    restated = [key for key, value in leaves(data) if not key.startswith(("defaults", "hydra")) and key != "job"
                and schema_value(group + key) == value]
    assert not restated, f"{path.name} restates schema defaults: {restated}"
