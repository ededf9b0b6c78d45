"""A mixture-of-experts model on the real stack: a tiny Qwen3-MoE trains under ZeRO-3 with its load-balancing
loss beside the objective, vLLM serves the trained checkpoint on CPU with the trainer's logprobs, and pretraining
lowers both its loss and its load imbalance. RL on it is refused on CPU, where no engine takes its new weights."""
import pytest

from tests.e2e.conftest import run_job
from tests.e2e.test_weight_sync import TOLERANCE, clipped_at, fixed_batch, start_policy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory) -> str:
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("moe") / "tiny_moe", texts=tokenizer_texts(),
                                num_experts=4, experts_per_token=2))


def test_zero3_trains_the_moe_with_its_routing_loss_and_vllm_serves_the_checkpoint(ray_cluster, moe_model, tmp_path):
    from rlsys.actors.group import Placement, create_placement
    from rlsys.actors.rollout import RolloutGroup, RolloutSpec

    policy = start_policy(moe_model, zero_stage=3, lr=0.05)
    batch = fixed_batch()
    try:
        before = policy.logprobs(batch)["logp"]
        for _ in range(3):
            metrics = policy.train(dict(batch, advantages=[[1.0] * 5] * 4, old_logp=policy.logprobs(batch)["logp"]),
                                   clipped_at(10.0))
            assert metrics["aux_loss"] > 0 and metrics["expert_load_min"] <= 1.0 <= metrics["expert_load_max"]
        after = policy.logprobs(batch)["logp"]
        policy.save_hf(str(tmp_path / "trained"))
    finally:
        policy.kill()
    assert sum(map(sum, after)) > sum(map(sum, before)) + 1.0, "the advantaged tokens became likelier"
    rollout = RolloutGroup("vllm", RolloutSpec(model_path=str(tmp_path / "trained"), device="cpu", max_model_len=256,
                                               gpu_memory_utilization=0.1),
                           Placement(create_placement(1, gpus=0, cpus=1), [0], num_gpus=0, num_cpus=1))
    try:
        sequences = [p + r for p, r in zip(batch["prompt_ids"], batch["response_ids"])]
        served = rollout.prompt_logprobs(sequences)[0]
    finally:
        rollout.kill()
    worst = max(abs(a - b) for seq, prompt, trained in zip(served, batch["prompt_ids"], after)
                for a, b in zip(seq[len(prompt) - 1:], trained))
    assert worst < TOLERANCE, f"vLLM serves the trained MoE {worst:.2e} away from the trainer"


def test_rl_on_an_moe_is_refused_on_cpu_before_anything_starts(moe_model, tmp_path):
    from rlsys.config.compose import compose_job
    from rlsys.errors import ConfigError
    from rlsys.trainers.rl import RLController

    cfg = compose_job("grpo", [f"output_dir={tmp_path}", f"model.path={moe_model}", "cluster.device=cpu"])
    with pytest.raises(ConfigError, match="cannot take its updated weights"):
        RLController(cfg)


def test_pretraining_the_moe_lowers_its_loss_and_evens_its_routing(ray_cluster, tmp_path):
    import transformers

    metrics = run_job("pretrain", tmp_path, "model=tiny_moe", "model.router_aux_loss_coef=0.05",
                      "trainer.max_steps=60", "trainer.eval_every=0")
    rows = [m for m in metrics if "train/aux_loss" in m]
    first, last = rows[:10], rows[-10:]
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)
    assert mean(last, "train/loss") < 0.7 * mean(first, "train/loss")
    assert mean(last, "train/aux_loss") < mean(first, "train/aux_loss"), "the load-balancing loss falls"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoints" / "final")
    assert type(model).__name__ == "Qwen3MoeForCausalLM" and model.config.num_experts == 4
