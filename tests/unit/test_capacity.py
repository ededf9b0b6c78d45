"""The memory floors the capacity check holds roles to, against hand-computed values."""
import json

import pytest

from rlsys.actors.capacity import GB, host_gb_per_process, parameter_count
from rlsys.config.compose import compose_job
from rlsys.config.jobs import Role
from rlsys.config.validate import to_typed

PARAMS = 1e9  # a 1B model: 4 GB of fp32 weights


def cfg(*overrides):
    return to_typed(compose_job("grpo", list(overrides)))


@pytest.mark.parametrize("stage, expected_gb", [
    (0, 0.8 + 16e9 / GB),                        # weights, gradients, two moments: 4 + 4 + 8 bytes a parameter
    (1, 0.8 + (4e9 + 4e9 + 8e9 / 4) / GB),       # the moments sharded over 4 ranks
    (2, 0.8 + (4e9 + 4e9 / 4 + 8e9 / 4) / GB),   # and the gradients
    (3, 0.8 + (16e9 / 4) / GB),                  # and the weights
])
def test_a_trainer_rank_on_cpu_by_zero_stage(stage, expected_gb):
    policy = Role("policy", 4, 1.0, kind="trainer")
    zero = cfg(f"deepspeed.zero_stage={stage}")
    assert host_gb_per_process(policy, zero, "cpu", PARAMS) == pytest.approx(expected_gb)


def test_frozen_models_engines_and_gpus():
    c = cfg()
    reference = Role("reference", 1, 1.0, kind="frozen")
    assert host_gb_per_process(reference, c, "cpu", PARAMS) == pytest.approx(0.8 + 4e9 / GB)
    engine = Role("rollout", 1, 1.0, kind="engine")
    assert host_gb_per_process(engine, c, "cpu", PARAMS) == pytest.approx(1.0 + 4e9 / GB + 1.0)  # + 1 GB of KV cache
    assert host_gb_per_process(engine, c, "cuda", PARAMS) == 1.0, "on GPUs the model is in device memory"
    offloaded = cfg("deepspeed.offload_optimizer=true")
    assert host_gb_per_process(Role("policy", 2, 1.0, kind="trainer"), offloaded, "cuda", PARAMS) == \
        pytest.approx(0.8 + 8e9 / 2 / GB)
    assert host_gb_per_process(Role("judge", 1, 1.0, kind="engine"), c, "cpu", PARAMS) == 2.0, "a model of its own"


def test_parameters_from_the_weight_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"0" * 2000)
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    assert parameter_count(str(tmp_path)) == 1000
    assert parameter_count(None) == 0 and parameter_count(str(tmp_path / "missing")) == 0
