"""Hydra composition from Python: the job presets in `configs/`, used by the pipeline and by tests."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import rlsys.configs
from rlsys.config.schema import JobConfig

# the repository's configs/ folder, installed as the package rlsys.configs (editable or from a wheel)
CONFIG_DIR = Path(rlsys.configs.__file__).resolve().parent


def config_groups() -> set[str]:
    """The presets' groups (`algo=ppo` picks a file of configs/algo/; it does not set a value)."""
    return {p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and any(p.glob("*.yaml"))}


def in_free_form_mapping(key: str) -> bool:
    """Whether a dotted key names an entry of a mapping whose keys are the user's (data.columns, ...)."""
    node = JobConfig
    for part in key.split(".")[:-1]:
        field = {f.name: f for f in dataclasses.fields(node)}.get(part)
        value = field.default_factory() if field and field.default_factory is not dataclasses.MISSING else None
        if isinstance(value, dict):
            return True
        if not dataclasses.is_dataclass(value):
            return False
        node = type(value)
    return False


def adding_free_form_keys(override: str) -> str:
    """`data.columns.solution=gold` works as typed: Hydra needs `++` (add or set) for a key its preset lacks,
    which in a mapping of the user's own keys is the usual case."""
    key = override.partition("=")[0]
    if "=" not in override or key[:1] in "+~" or "@" in key or not in_free_form_mapping(key):
        return override
    return "++" + override


def implied_presets(job: str, overrides: list[str]) -> list[str]:
    """Preset choices a setting implies, unless the overrides pick that group themselves: on-policy
    distillation trains like RL, so `rlsys distill distill.on_policy=true` takes trainer=distill_on_policy."""
    values = {o.partition("=")[0].lstrip("+"): o.partition("=")[2].strip().lower() for o in overrides if "=" in o}
    if job == "distill" and values.get("distill.on_policy") == "true" and "trainer" not in values:
        return ["trainer=distill_on_policy"]
    return []


def register_schema() -> None:
    """Make the typed schema the first default of every preset, so Hydra checks what it composes."""
    ConfigStore.instance().store(name="rlsys_schema", node=JobConfig)


def compose_job(job: str, overrides: list[str] | None = None) -> DictConfig:
    """The config `rlsys JOB overrides...` would run with (not yet checked: see validate.to_typed)."""
    register_schema()
    overrides = [*implied_presets(job, overrides or []), *(adding_free_form_keys(o) for o in overrides or [])]
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=job, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=job, overrides=overrides)
