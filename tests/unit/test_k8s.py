"""`rlsys k8s`: the rendered KubeRay manifests are valid, sized from the config, and run what was asked."""
import json
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from rlsys.config.compose import compose_job
from rlsys.config.validate import to_typed
from rlsys.launchers.k8s import KubeOptions, main_k8s, render_raycluster, render_rayjob

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "launchers" / "kuberay_schema.json").read_text())


def rayjob(job, overrides, **options):
    return render_rayjob(to_typed(compose_job(job, overrides)), job, overrides, "rlsys:test", KubeOptions(**options))


def cluster_spec(manifest):
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def pod_templates(manifest):
    spec = cluster_spec(manifest)
    return [spec["headGroupSpec"]["template"]] + [group["template"] for group in spec["workerGroupSpecs"]]


def assert_valid(manifest):
    jsonschema.Draft202012Validator(SCHEMA).validate(manifest)
    for i, template in enumerate(pod_templates(manifest)):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"pod-{i}", **template["metadata"]},
               "spec": template["spec"]}
        kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)


def workers(manifest):
    [group] = cluster_spec(manifest)["workerGroupSpecs"]
    return group


def gpus_of(template):
    return int(template["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))


GRPO = ["trainer.max_steps=7", "rollout.temperature=0.8", "data.train=hf:my data"]


def test_grpo_rayjob_is_valid_and_sized_from_the_roles():
    manifest = rayjob("grpo", GRPO)
    assert_valid(manifest)
    assert manifest["kind"] == "RayJob" and manifest["spec"]["shutdownAfterJobFinishes"] is True
    assert manifest["spec"]["ttlSecondsAfterFinished"] > 0
    assert cluster_spec(manifest)["rayVersion"] == "2.60.0"
    group = workers(manifest)  # the preset's policy 1 + rollout 2 x tp 1; no reference without a KL term
    assert (group["replicas"], gpus_of(group["template"]), group["rayStartParams"]["num-gpus"]) == (1, 3, "3")
    with_kl = workers(rayjob("grpo", GRPO + ["algo.kl_coef=0.05"]))  # + the reference
    assert gpus_of(with_kl["template"]) == 4
    assert gpus_of(cluster_spec(manifest)["headGroupSpec"]["template"]) == 0


def test_ppo_rayjob_counts_the_critic_and_splits_over_nodes():
    manifest = rayjob("ppo", ["rollout.num_engines=4", "rollout.tensor_parallel_size=2"], gpus_per_node=8)
    assert_valid(manifest)
    group = workers(manifest)  # policy 2 + reference 1 + critic 1 + rollout 4 x 2 = 12 -> 2 pods of 8
    assert (group["replicas"], gpus_of(group["template"])) == (2, 8)
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "8"


def test_colocated_roles_need_only_the_policy_devices():
    assert gpus_of(workers(rayjob("grpo", ["cluster.colocate=true", "cluster.policy.num_ranks=2"]))["template"]) == 2


def test_cpu_device_renders_cpu_only_pods():
    manifest = rayjob("ppo", ["cluster.device=cpu"])
    assert_valid(manifest)
    assert all(gpus_of(t) == 0 for t in pod_templates(manifest))
    assert workers(manifest)["rayStartParams"]["num-gpus"] == "0"
    assert "cluster.device=cpu" in manifest["spec"]["entrypoint"]


def test_entrypoint_runs_the_overrides_on_the_cluster_and_writes_into_the_volume():
    words = shlex.split(rayjob("grpo", GRPO + ["cluster.address=ray://elsewhere:10001"])["spec"]["entrypoint"])
    assert words[:2] == ["rlsys", "grpo"] and all(o in words for o in GRPO)
    assert words[-1] == "cluster.address=auto" and "cluster.address=ray://elsewhere:10001" not in words
    assert "output_dir=/checkpoints/outputs/grpo" in words
    assert "cluster.device=cuda" in words  # the driver runs on the GPU-less head pod


def test_pods_get_the_wandb_secret_the_volume_and_shared_memory():
    manifest = rayjob("grpo", [], pvc="team-ckpt", wandb_secret="team-wandb")
    for template in pod_templates(manifest):
        container = template["spec"]["containers"][0]
        [key] = [e for e in container["env"] if e["name"] == "WANDB_API_KEY"]
        assert key["valueFrom"]["secretKeyRef"]["name"] == "team-wandb"
        assert key["valueFrom"]["secretKeyRef"]["optional"] is True
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts["/checkpoints"]]["persistentVolumeClaim"]["claimName"] == "team-ckpt"
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_raycluster_is_valid_and_carries_the_command():
    cfg = to_typed(compose_job("pipeline", []))
    manifest = render_raycluster(cfg, "pipeline", [], "rlsys:test")
    assert_valid(manifest)
    assert manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["annotations"]["rlsys/entrypoint"].startswith("rlsys pipeline ")
    assert gpus_of(workers(manifest)["template"]) == 3  # the largest stage: GRPO (policy 1 + rollout 2)


def test_cli_prints_yaml(capsys):
    assert main_k8s(["ppo", "trainer.max_steps=3", "--image", "reg/rlsys:1", "--gpus-per-node", "2",
                     "--namespace", "ml", "--cluster"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert_valid(manifest)
    assert manifest["metadata"]["namespace"] == "ml"
    assert (workers(manifest)["replicas"], gpus_of(workers(manifest)["template"])) == (3, 2)
    assert pod_templates(manifest)[0]["spec"]["containers"][0]["image"] == "reg/rlsys:1"


@pytest.mark.parametrize("argv, words", [
    (["grpo", "trainer.max_stepz=3"], "trainer.max_steps"),
    (["grpo", "trainer.max_steps=many"], "trainer.max_steps"),
    (["grpo", "output_dir=/tmp/elsewhere"], "/checkpoints"),
    (["grpo", "algo=nope"], "nope"),
])
def test_bad_override_is_one_readable_line(capsys, argv, words):
    assert main_k8s(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith("rlsys k8s grpo: error: ") and words in line


def test_help_explains_and_unknown_job_fails(capsys):
    assert main_k8s(["--help"]) == 0
    assert "PersistentVolumeClaim" in capsys.readouterr().out
    assert main_k8s(["train"]) == 2
