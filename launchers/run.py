"""Run one composed job: check the config, pick the controller, turn known failures into one clear message."""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf, open_dict

from rlsys import watchdog


def _output_dir_for_sweep(cfg: DictConfig) -> None:
    """In a multirun every run gets its own subfolder, named after its overrides (e.g. seed=1)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hydra_cfg = HydraConfig.get()
    except ValueError:
        return
    if hydra_cfg.mode == RunMode.MULTIRUN:
        subdir = hydra_cfg.job.override_dirname or str(hydra_cfg.job.num)
        with open_dict(cfg):
            cfg.output_dir = f"{cfg.output_dir}/{subdir}"


def user_message(err: BaseException) -> str | None:
    """The message to show for a failure the user can fix, or None for a bug (shown with its traceback)."""
    from rlsys.errors import RlsysError

    cause = getattr(err, "cause", None)  # a Ray task error carries the actor's original exception
    if isinstance(cause, BaseException) and cause is not err:
        found = user_message(cause)
        if found:
            return found
    if isinstance(err, RlsysError):
        return str(err).strip().splitlines()[-1] if "Traceback" in str(err) else str(err)
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"{err.strerror}: {err.filename}" if err.filename else str(err)
    if type(err).__name__ in ("ActorDiedError", "RayActorError"):
        return f"a Ray actor died: {str(err).splitlines()[0]}"
    return None


def resume_point(output_dir: str) -> str:
    """Where `resume=auto` would go on from, said after an interruption."""
    from pathlib import Path

    from rlsys.loop.checkpoints import Checkpoints

    saved = (Path(output_dir) / "checkpoints").is_dir()  # Checkpoints() would create the folder
    latest = Checkpoints(output_dir, keep_last=1).latest() if saved else None
    return (f"resume=auto goes on from {latest}" if latest
            else "no checkpoint was saved, so a rerun starts from the beginning")


def run_job(cfg: DictConfig) -> None:
    from rlsys.config.jobs import controller
    from rlsys.config.validate import to_typed
    from rlsys.errors import ConfigError, Preempted
    from rlsys.logging.startup import CLOCK

    CLOCK.begin()
    job = cfg.get("job", "?")
    _output_dir_for_sweep(cfg)
    try:
        typed = to_typed(cfg)
    except ConfigError as err:
        print(f"rlsys {job}: error: {err}", file=sys.stderr)
        sys.exit(2)
    watchdog.configure(typed.watchdog)  # user code loads under its deadline before the step loop starts
    CLOCK.lap("launch")
    try:
        controller(job)(typed)
        shut_down(job, typed.output_dir)
    except Preempted as err:
        print(f"rlsys {job}: {err}", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print(f"rlsys {job}: interrupted; {resume_point(typed.output_dir)}", file=sys.stderr)
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - everything the user can fix gets one line, the rest a traceback
        message = user_message(err)
        if message is None:
            raise
        print(f"rlsys {job}: error: {message}", file=sys.stderr)
        sys.exit(1)


def shut_down(job: str, output_dir: str) -> None:
    """The job is over: the local Ray it started stops now (not at exit), and the shutdown's seconds are said."""
    import ray

    from rlsys.logging.startup import CLOCK

    ray.shutdown()
    seconds = CLOCK.shut_down(output_dir)
    if seconds is not None:
        print(f"[{job}] shutdown {seconds:.1f} s", flush=True)


def run_config(cfg: DictConfig | dict) -> None:
    """Run a job from Python (tests, notebooks) with the same checks as the CLI; a Ray cluster it finds running
    (a test session's) stays up."""
    from rlsys.config.jobs import controller
    from rlsys.config.validate import to_typed
    from rlsys.logging.startup import CLOCK

    CLOCK.begin()
    typed = to_typed(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg)
    watchdog.configure(typed.watchdog)
    controller(typed.job)(typed)
    CLOCK.shut_down(typed.output_dir)
