"""Hydra composition from Python: the job presets in `configs/`, used by the pipeline and by tests."""
from __future__ import annotations

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


def register_schema() -> None:
    """Make the typed schema the first default of every preset, so Hydra checks what it composes."""
    ConfigStore.instance().store(name="rlsys_schema", node=JobConfig)


def compose_job(job: str, overrides: list[str] | None = None) -> DictConfig:
    """The config `rlsys JOB overrides...` would run with (not yet checked: see validate.to_typed)."""
    register_schema()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name=job, overrides=list(overrides or []))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name=job, overrides=list(overrides or []))
