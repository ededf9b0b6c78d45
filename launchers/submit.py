"""`rlsys submit | status | logs | stop`: the same jobs on a Ray cluster, through the Ray Jobs API."""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
EXCLUDES = [".venv", ".git", "outputs", "wandb", "__pycache__", ".gpu1", ".gpu2"]


def _client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS)


def entrypoint(job: str, overrides: list[str]) -> str:
    """The command the cluster runs: the job joins the cluster it runs on (cluster.address=auto)."""
    has_address = any(o.startswith("cluster.address=") for o in overrides)
    return shlex.join(["rlsys", job, *overrides, *([] if has_address else ["cluster.address=auto"])])


def _submit_when_ready(client, command: str, runtime_env: dict, wait_s: float = 120.0) -> str:
    """Submit, waiting while a just-started cluster has no job agent up yet (HTTP 500 "No available agent")."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=command, runtime_env=runtime_env)
        except RuntimeError as err:
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def _follow(client, job_id: str) -> int:
    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)
    asyncio.run(tail())
    status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
    print(f"rlsys: job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--address", help=f"Ray dashboard address (default: $RAY_ADDRESS or {DEFAULT_ADDRESS})")
    return parser


def main_submit(argv: list[str]) -> int:
    parser = _parser("rlsys submit", "Submit `rlsys JOB overrides...` to a Ray cluster, print its id and follow its logs.")
    parser.add_argument("job", help="pipeline, pretrain, sft, grpo or ppo")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for a local run")
    parser.add_argument("--working-dir", help="upload this folder as the job's working directory")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for the job")
    parser.add_argument("--pip", action="append", default=[], help="extra pip packages for the job's runtime env")
    parser.add_argument("--no-follow", action="store_true", help="print the job id and return at once")
    args = parser.parse_args(argv)

    from rlsys.config.jobs import JOBS

    if args.job not in JOBS:
        parser.error(f"unknown job '{args.job}'; choose one of: {', '.join(JOBS)}")
    env = dict(item.split("=", 1) for item in args.env)
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        if key in os.environ:
            env.setdefault(key, os.environ[key])
    runtime_env: dict = {"env_vars": env}
    if args.working_dir:
        runtime_env.update(working_dir=args.working_dir, excludes=EXCLUDES)
    if args.pip:
        runtime_env["pip"] = args.pip
    client = _client(args.address)
    job_id = _submit_when_ready(client, entrypoint(args.job, args.overrides), runtime_env)
    print(f"rlsys: submitted {job_id}  (rlsys logs {job_id} | rlsys status {job_id} | rlsys stop {job_id})", flush=True)
    return 0 if args.no_follow else _follow(client, job_id)


def _job_args(prog: str, description: str, argv: list[str], follow: bool = False) -> tuple[argparse.Namespace, object]:
    """(the arguments, a Jobs API client) of a command about one submitted job."""
    parser = _parser(prog, description)
    parser.add_argument("job_id")
    if follow:
        parser.add_argument("--follow", "-f", action="store_true")
    args = parser.parse_args(argv)
    return args, _client(args.address)


def main_status(argv: list[str]) -> int:
    args, client = _job_args("rlsys status", "Print the status of a submitted job.", argv)
    info = client.get_job_info(args.job_id)
    print(f"{args.job_id}: {str(info.status).rsplit('.', 1)[-1]}  {info.entrypoint}")
    if info.message:
        print(info.message)
    return 0


def main_logs(argv: list[str]) -> int:
    args, client = _job_args("rlsys logs", "Print a submitted job's logs (--follow to keep streaming until it ends).",
                             argv, follow=True)
    if args.follow:
        return _follow(client, args.job_id)
    print(client.get_job_logs(args.job_id), end="")
    return 0


def main_stop(argv: list[str]) -> int:
    args, client = _job_args("rlsys stop", "Stop a submitted job.", argv)
    stopped = client.stop_job(args.job_id)
    print(f"{args.job_id}: {'stop requested' if stopped else 'already finished'}")
    return 0


if __name__ == "__main__":
    sys.exit(main_submit(sys.argv[1:]))
