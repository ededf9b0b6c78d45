"""User code the config names (`path/file.py` or `package.module`): reward functions, environments.

Loaded on the driver before any actor starts, so that a missing file, an import error or an import that never
returns (past `watchdog.load_s`) is one message.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from rlsys import watchdog
from rlsys.errors import UserCodeError


def _looks_like_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def never_loaded(kind: str, what: str, late: watchdog.Stalled) -> UserCodeError:
    return UserCodeError(f"importing {kind} {what} did not finish within {watchdog.limit('load_s'):g}s; it was at "
                         f"{late.where}. Fix what it waits for, or raise watchdog.load_s")


def import_file(target: str, kind: str) -> ModuleType:
    path = Path(target).expanduser()
    if not path.is_file():
        raise UserCodeError(
            f"{kind} file '{target}' not found (resolved to '{path.resolve()}', "
            f"current directory '{Path.cwd()}'); use a path relative to the current directory or an absolute path"
        )
    resolved = path.resolve()
    # Unique, private module name: two files called rewards.py must not clash.
    name = f"rlsys_user_{kind}_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"{kind} file '{target}' cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered only while executing (dataclasses etc. look themselves up in sys.modules); removed
    # afterwards so cloudpickle ships the function by value to Ray workers that lack the file.
    sys.modules[name] = module
    try:
        watchdog.call(spec.loader.exec_module, module, role=f"{kind} file '{target}'", call="its import",
                      kind="load_s")
    except watchdog.Stalled as late:
        raise never_loaded(kind, f"file '{target}'", late) from None
    except (Exception, SystemExit) as exc:  # SystemExit: a script's sys.exit() at import
        raise UserCodeError(
            f"importing {kind} file '{target}' failed with {type(exc).__name__}: {exc}; fix the error in that file"
        ) from exc
    finally:
        sys.modules.pop(name, None)
    return module


def import_module(target: str, kind: str) -> ModuleType:
    try:
        return watchdog.call(importlib.import_module, target, role=f"{kind} module '{target}'", call="its import",
                             kind="load_s")
    except watchdog.Stalled as late:
        raise never_loaded(kind, f"module '{target}'", late) from None
    except (Exception, SystemExit) as exc:
        raise UserCodeError(
            f"importing {kind} module '{target}' failed with {type(exc).__name__}: {exc}; "
            "check the module is installed/on PYTHONPATH, or give a file path ending in .py"
        ) from exc


def import_target(target: str, kind: str) -> ModuleType:
    """A file (path/file.py) or an importable module (package.module)."""
    return import_file(target, kind) if _looks_like_file(target) else import_module(target, kind)
