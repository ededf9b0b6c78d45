"""Session-wide real stack: one local Ray, a tiny model built offline, one vLLM rollout engine."""
import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(items):
    """The two-node cluster test stops every Ray process on the machine when it ends: run it last."""
    items.sort(key=lambda item: "test_cluster.py" in str(item.fspath))


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from rlsys.actors.cluster import QUIET_ENV

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=16, num_gpus=0, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": QUIET_ENV})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", texts=tokenizer_texts()))


@pytest.fixture(scope="session")
def vllm_rollout(ray_cluster, tiny_model):
    """One vLLM engine for the whole session (it takes ~30 s to start on CPU)."""
    from rlsys.actors.group import Placement, create_placement
    from rlsys.actors.rollout import RolloutGroup, RolloutSpec

    placement = Placement(create_placement(1, gpus=0, cpus=1), [0], num_gpus=0, num_cpus=1)
    group = RolloutGroup("vllm", RolloutSpec(model_path=tiny_model, device="cpu", max_model_len=256,
                                             gpu_memory_utilization=0.1), placement,
                         env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"})
    yield group
    import ray

    if ray.is_initialized():  # the two-node test, run last, leaves the session's cluster before its `ray stop`
        group.kill()


def run_job(job: str, output_dir, *overrides: str) -> list[dict]:
    """Run a job in this process (on the session's Ray) exactly as `rlsys JOB overrides` would; its metrics."""
    from rlsys.config.compose import compose_job
    from rlsys.launchers.run import run_config
    from rlsys.logging import read_metrics

    run_config(compose_job(job, [f"output_dir={output_dir}", "logger=[jsonl]", *overrides]))
    return read_metrics(str(output_dir))


def in_background(job) -> tuple:
    """job() on a thread of its own: (the thread, a dict that gets its "metrics" or its "error")."""
    import threading

    result: dict = {}

    def run() -> None:
        try:
            result["metrics"] = job()
        except BaseException as err:  # noqa: BLE001 - handed to the test thread
            result["error"] = err

    worker = threading.Thread(target=run)
    worker.start()
    return worker, result


def last(metrics: list[dict], key: str) -> float:
    return [m[key] for m in metrics if m.get(key) is not None][-1]


@pytest.fixture(scope="session")
def pretrained(ray_cluster, tmp_path_factory):
    """The embedded pretraining stage, shortened to 300 of the preset's 850 steps to fit CI's time."""
    out = tmp_path_factory.mktemp("pretrain")
    return out, run_job("pretrain", out, "trainer.max_steps=300")


@pytest.fixture(scope="session")
def sft_model(pretrained, tmp_path_factory):
    """SFT from the pretrained checkpoint with its preset settings; (output_dir, metrics)."""
    out = tmp_path_factory.mktemp("sft")
    return out, run_job("sft", out, f"model.path={pretrained[0] / 'checkpoints' / 'final'}")
