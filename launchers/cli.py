"""The `rlsys` command: `rlsys JOB [key=value ...]`, composed by Hydra from `configs/JOB.yaml`."""
from __future__ import annotations

import os
import signal
import sys

# Commands that manage runs rather than train: (module, function, one line of help)
TOOLS = {
    "submit": ("rlsys.launchers.submit", "main_submit", "submit JOB overrides... to a Ray cluster and follow its logs"),
    "status": ("rlsys.launchers.submit", "main_status", "status of a submitted job"),
    "logs": ("rlsys.launchers.submit", "main_logs", "logs of a submitted job (-f to follow)"),
    "stop": ("rlsys.launchers.submit", "main_stop", "stop a submitted job"),
    "k8s": ("rlsys.launchers.k8s", "main_k8s", "print a KubeRay RayJob (or --cluster: RayCluster) for JOB overrides..."),
    "report": ("rlsys.launchers.report", "main_report", "PNG plots and a text summary of a run folder"),
}

USAGE = """usage: rlsys JOB [key=value ...] [--cfg job] [-m key=a,b]
       rlsys COMMAND [args...]            (rlsys COMMAND --help for its options)

Jobs:
{jobs}

Commands:
{tools}

Every job writes into output_dir: config.yaml, metrics.jsonl, checkpoints/ (final/ loads in transformers and vLLM).
Keys with the same meaning in every job:
  output_dir=DIR         where the run writes (default outputs/JOB)
  seed=N                 random seed
  model.path=DIR         any Hugging Face model folder (default: build a tiny model)
  data.train=PATH        jsonl / parquet file or folder, or hf:NAME (default: the embedded arithmetic task)
  trainer.max_steps=N    optimizer steps
  trainer.save_every=N   checkpoint every N steps
  resume=auto            continue from the latest checkpoint in output_dir (or resume=PATH)
  logger=[console,jsonl,wandb]   metric sinks
Examples:
  rlsys pipeline
  rlsys sft model.path=outputs/pretrain/checkpoints/final trainer.max_steps=200
  rlsys grpo algo.kl_coef=0.02 rollout.temperature=0.8
  rlsys sft --cfg job                  # show the composed config and exit
  rlsys pretrain -m seed=0,1           # one run per value (Hydra multirun)
"""


def print_usage(stream=sys.stdout) -> None:
    from rlsys.config.jobs import JOBS

    width = max(map(len, [*JOBS, *TOOLS]))
    jobs = "\n".join(f"  {name:<{width}}  {job.help}" for name, job in JOBS.items())
    tools = "\n".join(f"  {name:<{width}}  {text}" for name, (_, _, text) in TOOLS.items())
    try:
        print(USAGE.format(jobs=jobs, tools=tools), file=stream, flush=True)
    except BrokenPipeError:  # `rlsys --help | head` ends quietly, like other commands
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())  # so the flush at exit cannot fail again
        sys.exit(0)


HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--config-dir", "-cd",
                          "--experimental-rerun"}


def key_value_overrides(args: list[str]) -> list[str]:
    """The key=value overrides among the arguments, leaving out Hydra's own flags and their values."""
    picked, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in HYDRA_FLAGS_WITH_VALUE
        else:
            picked.append(arg)
    return picked


def fail(job: str, message: str, code: int = 2) -> None:
    print(f"rlsys {job}: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_usage()
        return
    from rlsys.config.jobs import JOBS

    job, overrides = argv[0], argv[1:]
    if job in TOOLS:
        import importlib

        module, function, _ = TOOLS[job]
        sys.exit(getattr(importlib.import_module(module), function)(overrides))
    if job not in JOBS:
        print_usage(sys.stderr)
        fail(job, f"unknown job '{job}'; choose one of: {', '.join(JOBS)}.")
    if any(arg in ("-h", "--help") for arg in overrides):
        print(f"rlsys {job}: {JOBS[job].help}\n")
        print_usage()
        return

    from rlsys.config.compose import CONFIG_DIR, adding_free_form_keys, implied_presets, register_schema
    from rlsys.config.validate import check_overrides
    from rlsys.errors import ConfigError

    try:
        check_overrides(key_value_overrides(overrides))
    except ConfigError as err:
        fail(job, str(err))

    import hydra

    from rlsys.launchers.run import run_job

    # A terminated run exits like an interrupted one, so the local Ray it started is shut down with it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    register_schema()
    values = set(key_value_overrides(overrides))
    sys.argv = [f"rlsys {job}", *implied_presets(job, list(values)),
                *(adding_free_form_keys(a) if a in values else a for a in overrides)]
    hydra.main(config_path=str(CONFIG_DIR), config_name=job, version_base=None)(run_job)()


if __name__ == "__main__":
    main()
