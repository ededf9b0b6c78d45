"""rollout.weight_sync: what `auto` picks for each device, backend, LoRA and layout, and the clear refusals."""
import pytest

from rlsys.actors.weight_sync import problem, resolve
from rlsys.config.compose import compose_job
from rlsys.config.validate import to_typed


def grpo(*overrides: str):
    return to_typed(compose_job("grpo", list(overrides)))


@pytest.mark.parametrize("overrides, device, expected", [
    ((), "cpu", "object_store"),
    ((), "cuda", "nccl"),
    (("cluster.colocate=true", "rollout.num_engines=1"), "cuda", "ipc"),
    (("model.lora.enabled=true",), "cpu", "adapter"),
    (("model.lora.enabled=true",), "cuda", "adapter"),
    (("model.lora.enabled=true", "model.lora.target_modules=[q_proj,embed_tokens]"), "cuda", "nccl"),
    (("rollout.backend=hf",), "cuda", "object_store"),
    (("rollout.weight_sync=object_store",), "cuda", "object_store"),
])
def test_auto_picks_the_transport(overrides, device, expected):
    cfg = grpo(*overrides)
    assert resolve(cfg, device) == expected
    assert problem(cfg, device) is None


@pytest.mark.parametrize("overrides, device, expected", [
    (("rollout.weight_sync=nccl",), "cpu", "moves weights between GPUs"),
    (("rollout.weight_sync=ipc",), "cuda", "set cluster.colocate=true"),
    (("rollout.weight_sync=adapter",), "cpu", "set model.lora.enabled=true"),
    (("rollout.weight_sync=adapter", "model.lora.enabled=true", "rollout.backend=hf"), "cpu", "needs rollout.backend=vllm"),
])
def test_a_transport_that_cannot_serve_the_job_is_refused(overrides, device, expected):
    assert expected in problem(grpo(*overrides), device)
