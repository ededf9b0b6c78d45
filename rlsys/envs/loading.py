"""`env.name` (a built-in) or `env.path` (file.py:Class or package.module:Class) to an environment class,
checked on the driver before any actor starts."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

from rlsys.config.jobs import uses_environment
from rlsys.envs.calculator import CalculatorEnv
from rlsys.envs.retry import RetryEnv
from rlsys.errors import ConfigError
from rlsys.user_code import import_target

BUILTIN = {"calculator": CalculatorEnv, "retry": RetryEnv}


@dataclass
class EnvSpec:
    """What an environment worker needs to build one instance per episode."""
    name: str  # how messages name it: the built-in's name or env.path
    cls: type
    kwargs: dict
    timeout_s: float


def load_env_class(env_cfg) -> tuple[str, type]:
    if env_cfg.path:
        target, _, name = str(env_cfg.path).rpartition(":")
        if not target or not name:
            raise ConfigError(f"env.path={env_cfg.path!r} should be 'path/file.py:ClassName' or 'module:ClassName'")
        module = import_target(target, kind="environment")
        cls = getattr(module, name, None)
        if cls is None:
            classes = sorted(n for n, v in vars(module).items()
                             if inspect.isclass(v) and v.__module__ == module.__name__) or ["no classes"]
            raise ConfigError(f"'{target}' has no class '{name}' (env.path); it defines: {', '.join(classes)}")
        label = str(env_cfg.path)
    elif env_cfg.name in BUILTIN:
        cls, label = BUILTIN[env_cfg.name], env_cfg.name
    else:
        raise ConfigError(f"env.name={env_cfg.name!r} is not a built-in environment ({', '.join(BUILTIN)}); write "
                          f"your own and set env.path=file.py:ClassName")
    if not inspect.isclass(cls):
        raise ConfigError(f"env {label} is a {type(cls).__name__}, not a class with reset(row) and step(message)")
    missing = [m for m in ("reset", "step") if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(f"environment {label} has no {' or '.join(missing)} method; an environment needs "
                          f"reset(row) -> messages and step(message) -> (observations, reward, done, info)")
    return label, cls


def env_spec(cfg) -> EnvSpec:
    label, cls = load_env_class(cfg.env)
    return EnvSpec(label, cls, dict(cfg.env.kwargs), float(cfg.env.timeout_s))


def instantiate(spec: EnvSpec):
    try:
        return spec.cls(**spec.kwargs)
    except Exception as err:
        raise ConfigError(f"environment {spec.name} could not be created with env.kwargs={spec.kwargs}: "
                          f"{type(err).__name__}: {err}") from err


def tool_schemas(spec: EnvSpec) -> list[dict]:
    """The environment's tools, read from one instance (what the prompt shows the model)."""
    tools = getattr(instantiate(spec), "tools", None) or []
    if not isinstance(tools, (list, tuple)) or not all(isinstance(t, dict) for t in tools):
        raise ConfigError(f"environment {spec.name}: `tools` must be a list of JSON schemas (dicts), got {tools!r:.80}")
    return list(tools)


def env_tools(cfg) -> list[dict] | None:
    """The tool schemas of the job's environment (None without one)."""
    return tool_schemas(env_spec(cfg)) if uses_environment(cfg) else None


def demonstrations(cfg):
    """The environment's `demonstration(row) -> messages`, when it has one (the built-in calculator does)."""
    return getattr(load_env_class(cfg.env)[1], "demonstration", None) if uses_environment(cfg) else None
