"""A real two-node Ray cluster on this machine: `rlsys submit` runs GRPO there and the roles land where asked."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    import ray

    # `ray stop` below ends every Ray process on the machine (a driver whose raylet dies exits with it), so this
    # process leaves the session's cluster first; this module runs last (see conftest).
    ray.shutdown()
    port, dashboard = free_port(), free_port()
    # the nodes run with this venv on PATH, as nodes of an image with rlsys installed would
    env = dict(os.environ, RAY_AUTH_MODE="token", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    head = [RAY, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}", "--include-dashboard=true",
            "--num-cpus=4", '--resources={"node_a": 8}', "--disable-usage-stats"]
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=4", '--resources={"node_b": 8}',
              "--disable-usage-stats"]
    subprocess.run(head, env=env, check=True, capture_output=True, timeout=180)
    try:
        subprocess.run(worker, env=env, check=True, capture_output=True, timeout=180)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)


def test_submit_places_rollout_and_trainers_on_the_nodes_the_config_names(two_node_cluster, tmp_path):
    address, env = two_node_cluster
    out = tmp_path / "grpo"
    command = [sys.executable, "-m", "rlsys", "submit", "--address", address, "grpo", f"output_dir={out}",
               "trainer.max_steps=2", "trainer.eval_every=0", "trainer.eval_samples=8", "logger=[jsonl]",
               "cluster.placement_strategy=SPREAD", "cluster.node_labels.rollout=node_a",
               "cluster.node_labels.policy=node_b", "cluster.node_labels.reference=node_b",
               "algo.kl_coef=0.02"]  # a KL term, so a reference runs (and is placed) too
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900,
                            cwd=Path(__file__).resolve().parents[2])
    assert "rlsys: submitted" in result.stdout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    placement = json.loads((out / "placement.json").read_text())
    nodes = {role: {a["node_id"] for a in actors} for role, actors in placement.items()}
    assert len(nodes["rollout"]) == 1 and len(nodes["policy"]) == 1
    assert nodes["rollout"] != nodes["policy"], "rollout on node_a, trainers on node_b"
    assert nodes["reference"] == nodes["policy"]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_job_without_an_address_joins_the_cluster_ray_start_runs(two_node_cluster, tmp_path):
    """No cluster.address: the job joins the running cluster (its token found without RAY_AUTH_MODE), starts no
    Ray of its own, and says so; its start-up breakdown lands in timings.json."""
    _, env = two_node_cluster
    env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    out = tmp_path / "joined"
    command = [sys.executable, "-m", "rlsys", "grpo", f"output_dir={out}", "trainer.max_steps=2",
               "trainer.eval_every=0", "logger=[jsonl]"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "joined the Ray cluster running at" in result.stdout
    assert "start-up" in result.stdout and "shutdown" in result.stdout
    timings = json.loads((out / "timings.json").read_text())
    assert {"perf/startup_s", "perf/startup_ray_s", "perf/startup_rollout_ready_s", "perf/shutdown_s"} <= set(timings)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["perf/startup_s"] == pytest.approx(timings["perf/startup_s"], abs=1e-3)
