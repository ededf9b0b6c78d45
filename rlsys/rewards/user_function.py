"""Load a user reward function from ``"path/to/file.py:function"`` or ``"package.module:function"``."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

from rlsys.rewards.errors import RewardConfigError


def _looks_like_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def import_file(target: str, kind: str = "reward") -> ModuleType:
    path = Path(target).expanduser()
    if not path.is_file():
        raise RewardConfigError(
            f"{kind} file '{target}' not found (resolved to '{path.resolve()}', "
            f"current directory '{Path.cwd()}'); use a path relative to the current directory or an absolute path"
        )
    resolved = path.resolve()
    # Unique, private module name: two files called rewards.py must not clash.
    name = f"rlsys_user_{kind}_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise RewardConfigError(f"{kind} file '{target}' cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered only while executing (dataclasses etc. look themselves up in sys.modules); removed
    # afterwards so cloudpickle ships the function by value to Ray workers that lack the file.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise RewardConfigError(
            f"importing {kind} file '{target}' failed with {type(exc).__name__}: {exc}; fix the error in that file"
        ) from exc
    finally:
        sys.modules.pop(name, None)
    return module


def import_module(target: str, kind: str = "reward") -> ModuleType:
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise RewardConfigError(
            f"importing {kind} module '{target}' failed with {type(exc).__name__}: {exc}; "
            "check the module is installed/on PYTHONPATH, or give a file path ending in .py"
        ) from exc


def import_target(target: str, kind: str = "reward") -> ModuleType:
    """A file (path/file.py) or an importable module (package.module)."""
    return import_file(target, kind) if _looks_like_file(target) else import_module(target, kind)


def _defined_callables(module: ModuleType) -> list[str]:
    return sorted(
        name
        for name, obj in vars(module).items()
        if not name.startswith("_") and callable(obj) and not inspect.isclass(obj)
        and getattr(obj, "__module__", None) == module.__name__
    )


def load_reward_function(spec: str) -> Callable[..., list[float]]:
    """Resolve ``spec`` to a callable ``fn(prompts, completions, **columns) -> list[float]``."""
    if not isinstance(spec, str) or ":" not in spec:
        raise RewardConfigError(
            f"reward function spec {spec!r} has no ':'; expected 'path/file.py:function' or 'package.module:function'"
        )
    target, _, func_name = spec.rpartition(":")
    if not target or not func_name:
        raise RewardConfigError(
            f"reward function spec {spec!r} is incomplete; expected 'path/file.py:function' or 'package.module:function'"
        )
    module = import_target(target)
    if not hasattr(module, func_name):
        available = _defined_callables(module)
        listing = ", ".join(available) if available else "no functions"
        raise RewardConfigError(f"'{target}' has no function '{func_name}'; it defines: {listing}")
    fn = getattr(module, func_name)
    if not callable(fn):
        raise RewardConfigError(
            f"'{spec}' is a {type(fn).__name__}, not a callable; point it at a function "
            "fn(prompts, completions, **columns) -> list[float]"
        )
    _check_signature(spec, fn)
    return fn


def _check_signature(spec: str, fn: Callable) -> None:
    """Found at load, not at the first step: a function rlsys cannot call as fn(prompts, completions, ...)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise RewardConfigError(
            f"reward function '{spec}' takes {signature}; rlsys calls it as fn(prompts, completions, **columns) "
            "(two lists of strings, then one list per data column it names): give it those two parameters first")
