"""`rlsys k8s`: a KubeRay RayJob (or RayCluster) that runs an rlsys job, sized from the job's composed config."""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import PurePosixPath

import yaml

from rlsys.config.jobs import demand as job_demand

RAY_VERSION = "2.60.0"  # the ray[default] pinned in pyproject.toml and docker/Dockerfile
IMAGE_UID = 1001  # the non-root user of docker/Dockerfile; as fsGroup it may write the volume
CPUS_PER_GPU = 4  # vLLM's scheduler, tokenization and DeepSpeed's host side run beside each GPU
MEMORY_GIB_PER_GPU = 32
MEMORY_GIB_PER_CPU = 4
HEAD_CPUS, HEAD_MEMORY_GIB = 4, 16  # the head runs the job's driver: rewards, advantages, logging
WANDB_SECRET_KEY = "api-key"


@dataclass(frozen=True)
class KubeOptions:
    gpus_per_node: int = 8
    pvc: str = "rlsys-checkpoints"
    mount_path: str = "/checkpoints"
    wandb_secret: str = "wandb"
    namespace: str = "default"
    name: str | None = None  # default: rlsys-JOB
    ttl_seconds: int = 3600


@dataclass(frozen=True)
class Demand:
    gpus: int
    cpus: int


def demand(cfg) -> Demand:
    """The devices the job's roles ask for (rlsys/config/jobs.py), rounded up; no GPUs on CPU."""
    need = job_demand(cfg, "cpu" if cfg.cluster.device == "cpu" else "cuda")
    return Demand(math.ceil(need.gpus), math.ceil(need.cpus))


def output_dir_in_volume(output_dir: str, mount_path: str) -> str:
    from rlsys.errors import ConfigError

    path, mount = PurePosixPath(output_dir), PurePosixPath(mount_path)
    if not path.is_absolute():
        return str(mount / path)
    if not path.is_relative_to(mount):
        raise ConfigError(f"output_dir={output_dir} is outside the checkpoint volume mounted at {mount_path}; "
                          f"give a relative output_dir or one under {mount_path}.")
    return str(path)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def entrypoint(cfg, job: str, overrides: list[str], options: KubeOptions, need: Demand) -> str:
    """`rlsys JOB overrides...` joining the cluster, writing into the volume, on the workers' device."""
    pinned = {
        "output_dir": output_dir_in_volume(cfg.output_dir, options.mount_path),
        # the driver runs on the GPU-less head pod, where device=auto would pick the CPU
        "cluster.device": "cuda" if need.gpus else "cpu",
        "cluster.address": "auto",
    }
    kept = [o for o in overrides if override_key(o) not in pinned]
    return shlex.join(["rlsys", job, *kept, *(f"{key}={value}" for key, value in pinned.items())])


def resources(cpus: int, memory_gib: int, gpus: int = 0) -> dict:
    # no CPU limit: throttling stalls NCCL and vLLM; memory limit = request so the pod is never overcommitted
    requests = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
    limits = {"memory": f"{memory_gib}Gi"}
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus)
    return {"requests": requests, "limits": limits}


def pod_template(container_name: str, image: str, options: KubeOptions, *, cpus: int, memory_gib: int,
                 gpus: int = 0, ports: list[dict] | None = None) -> dict:
    container = {
        "name": container_name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": resources(cpus, memory_gib, gpus),
        "env": [
            {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {
                "name": options.wandb_secret, "key": WANDB_SECRET_KEY, "optional": True}}},
            # one cache for all pods, so a hub dataset (data.train=hf:NAME) is downloaded once
            {"name": "HF_HOME", "value": f"{options.mount_path}/.cache/huggingface"},
        ],
        "volumeMounts": [{"name": "checkpoints", "mountPath": options.mount_path},
                         {"name": "dshm", "mountPath": "/dev/shm"}],
        **({"ports": ports} if ports else {}),
    }
    return {
        "metadata": {"labels": {"app.kubernetes.io/name": "rlsys"}},
        "spec": {
            "securityContext": {"fsGroup": IMAGE_UID},
            "containers": [container],
            "volumes": [
                {"name": "checkpoints", "persistentVolumeClaim": {"claimName": options.pvc}},
                # Ray's object store and NCCL live in /dev/shm; the container default (64Mi) is far too small
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{max(1, memory_gib // 2)}Gi"}},
            ],
        },
    }


def worker_group(need: Demand, image: str, options: KubeOptions) -> dict:
    if need.gpus:
        gpus = min(options.gpus_per_node, need.gpus)
        replicas = math.ceil(need.gpus / gpus)
        cpus = max(math.ceil(need.cpus / replicas), CPUS_PER_GPU * gpus)
        memory_gib = MEMORY_GIB_PER_GPU * gpus
    else:
        gpus, replicas, cpus = 0, 1, need.cpus
        memory_gib = max(8, MEMORY_GIB_PER_CPU * cpus)
    return {
        "groupName": "gpu-workers" if gpus else "cpu-workers",
        "replicas": replicas, "minReplicas": replicas, "maxReplicas": replicas,
        "rayStartParams": {"num-cpus": str(cpus), "num-gpus": str(gpus)},
        "template": pod_template("ray-worker", image, options, cpus=cpus, memory_gib=memory_gib, gpus=gpus),
    }


def ray_cluster_spec(need: Demand, image: str, options: KubeOptions) -> dict:
    ports = [{"name": "gcs", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
             {"name": "client", "containerPort": 10001}]
    return {
        "rayVersion": RAY_VERSION,
        "headGroupSpec": {
            # num-cpus 0: actors go to the workers, the head keeps the driver and Ray's control plane
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0", "num-gpus": "0"},
            "template": pod_template("ray-head", image, options, cpus=HEAD_CPUS, memory_gib=HEAD_MEMORY_GIB,
                                     ports=ports),
        },
        "workerGroupSpecs": [worker_group(need, image, options)],
    }


def metadata(job: str, options: KubeOptions, annotations: dict | None = None) -> dict:
    meta = {"name": options.name or f"rlsys-{job}", "namespace": options.namespace,
            "labels": {"app.kubernetes.io/name": "rlsys", "rlsys/job": job}}
    return {**meta, "annotations": annotations} if annotations else meta


def render_rayjob(cfg, job: str, overrides: list[str], image: str, options: KubeOptions = KubeOptions()) -> dict:
    """A RayJob: KubeRay starts a cluster, runs the job on it, and tears the cluster down when it ends."""
    need = demand(cfg)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": metadata(job, options),
        "spec": {
            "entrypoint": entrypoint(cfg, job, overrides, options, need),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": options.ttl_seconds,
            "rayClusterSpec": ray_cluster_spec(need, image, options),
        },
    }


def render_raycluster(cfg, job: str, overrides: list[str], image: str, options: KubeOptions = KubeOptions()) -> dict:
    """A long-lived RayCluster sized for the job; the command to run on its head is in an annotation."""
    need = demand(cfg)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": metadata(job, options, {"rlsys/entrypoint": entrypoint(cfg, job, overrides, options, need)}),
        "spec": ray_cluster_spec(need, image, options),
    }


DESCRIPTION = """Print a KubeRay manifest (YAML) that runs `rlsys JOB overrides...` on Kubernetes:
  rlsys k8s grpo model.path=/checkpoints/models/Qwen2.5-0.5B trainer.max_steps=500 | kubectl apply -f -

The overrides are checked like `rlsys JOB` checks them. Worker pods are sized from the devices the roles
ask for (cluster.<role>.num_ranks x gpus_per_rank, rollout.num_engines x tensor_parallel_size; with
cluster.colocate=true only the policy's); cluster.device=cpu gives CPU-only pods.
Before applying, create in the namespace:
  - a ReadWriteMany PersistentVolumeClaim (--pvc), mounted on every pod at /checkpoints; output_dir
    (relative, or under /checkpoints) is written there
  - optionally the W&B secret (--wandb-secret):
      kubectl create secret generic wandb --from-literal=api-key=$WANDB_API_KEY"""


def build_parser() -> argparse.ArgumentParser:
    from rlsys.config.jobs import JOBS

    defaults = KubeOptions()
    parser = argparse.ArgumentParser(prog="rlsys k8s", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", metavar="JOB", choices=JOBS, help=f"the rlsys job to run: {', '.join(JOBS)}")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Hydra overrides, as for `rlsys JOB`")
    parser.add_argument("--cluster", action="store_true",
                        help="a long-lived RayCluster instead of a RayJob (the command is in an annotation)")
    parser.add_argument("--image", default="rlsys:latest",
                        help="image built from docker/Dockerfile (default: %(default)s)")
    parser.add_argument("--gpus-per-node", type=int, default=defaults.gpus_per_node,
                        help="GPUs per worker pod at most (default: %(default)s)")
    parser.add_argument("--pvc", default=defaults.pvc, help="PersistentVolumeClaim for outputs (default: %(default)s)")
    parser.add_argument("--wandb-secret", default=defaults.wandb_secret,
                        help=f"Secret holding the W&B key under '{WANDB_SECRET_KEY}' (default: %(default)s)")
    parser.add_argument("--namespace", default=defaults.namespace, help="Kubernetes namespace (default: %(default)s)")
    parser.add_argument("--name", help="resource name (default: rlsys-JOB)")
    return parser


def one_line(err: Exception) -> str:
    """The error on one line; Hydra's lists of a group's options are kept, its search path dropped."""
    return " ".join(str(err).split("Config search path:")[0].split())


def main_k8s(argv: list[str]) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from rlsys.config.compose import compose_job
    from rlsys.config.validate import check_overrides, to_typed
    from rlsys.errors import RlsysError

    parser = build_parser()
    try:
        args = parser.parse_intermixed_args(argv)
    except SystemExit as exited:  # --help, or a usage error argparse has already printed
        return int(exited.code or 0)
    if args.gpus_per_node < 1:
        print("rlsys k8s: error: --gpus-per-node must be at least 1.", file=sys.stderr)
        return 2
    options = KubeOptions(gpus_per_node=args.gpus_per_node, pvc=args.pvc, wandb_secret=args.wandb_secret,
                          namespace=args.namespace, name=args.name)
    render = render_raycluster if args.cluster else render_rayjob
    try:
        check_overrides(args.overrides)
        cfg = to_typed(compose_job(args.job, args.overrides))
        manifest = render(cfg, args.job, args.overrides, args.image, options)
    except (RlsysError, HydraException, OmegaConfBaseException) as err:
        print(f"rlsys k8s {args.job}: error: {one_line(err)}", file=sys.stderr)
        return 2
    yaml.safe_dump(manifest, sys.stdout, sort_keys=False, width=10**6)  # the entrypoint on one line
    return 0
