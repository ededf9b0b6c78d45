"""Load a user reward function from ``"path/to/file.py:function"`` or ``"package.module:function"``."""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Callable

from rlsys.errors import RewardConfigError
from rlsys.user_code import import_target


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
    module = import_target(target, kind="reward")
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
