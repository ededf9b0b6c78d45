"""After a sync, every rollout engine's logprobs for a fixed sequence match the trainer's; before it they did not."""
import pytest
import torch

from rlsys.actors.weight_sync import WeightSync

TOLERANCE = 2e-4  # max |logp_engine - logp_trainer| per token, fp32 on CPU


def start_policy(tiny_model: str, zero_stage: int, lr: float = 5e-2, max_tokens: int = 4096, ranks: int = 2,
                 lora: bool = False):
    from omegaconf import OmegaConf

    from rlsys.actors.group import Placement, create_placement
    from rlsys.config.schema import JobConfig
    from rlsys.roles.train_group import start_train_group

    cfg = OmegaConf.structured(JobConfig)
    cfg.deepspeed.zero_stage = zero_stage
    cfg.trainer.lr, cfg.trainer.warmup_steps, cfg.trainer.lr_schedule = lr, 0, "constant"
    cfg.trainer.max_tokens_per_micro_batch = max_tokens
    cfg.model.lora.enabled = lora
    placement = Placement(create_placement(ranks, gpus=0, cpus=1), list(range(ranks)), num_gpus=0, num_cpus=1)
    return start_train_group("policy", cfg, tiny_model, "cpu", trainable=True, placement=placement)


def clipped_at(clip: float):
    """The policy loss of the schema's defaults (token mean, no KL), clipped at `clip`."""
    import dataclasses

    from omegaconf import OmegaConf

    from rlsys.config.losses import PolicyLoss
    from rlsys.config.schema import JobConfig

    return dataclasses.replace(PolicyLoss.from_config(OmegaConf.structured(JobConfig), kl_coef=0.0),
                               clip_low=clip, clip_high=clip)


def fixed_batch():
    prompt = [[5, 6, 7, 8], [9, 10, 11, 12]]
    response = [[13, 14, 15, 16, 17], [18, 19, 20, 21, 22]]
    return {"prompt_ids": prompt + prompt, "response_ids": response + response}


def train_a_little(policy, batch) -> None:
    """Three updates that move the trainer's weights away from the engine's."""
    for _ in range(3):
        batch_with_adv = dict(batch, advantages=[[1.0] * 5] * 4, old_logp=policy.logprobs(batch)["logp"])
        policy.train(batch_with_adv, clipped_at(10.0))


def engine_gap(policy, rollout, batch) -> float:
    trainer = policy.logprobs(batch)["logp"]
    sequences = [p + r for p, r in zip(batch["prompt_ids"], batch["response_ids"])]
    worst = 0.0
    for engine_view in rollout.prompt_logprobs(sequences):
        for seq, prompt, expected in zip(engine_view, batch["prompt_ids"], trainer):
            got = torch.tensor(seq[len(prompt) - 1:])
            worst = max(worst, (got - torch.tensor(expected)).abs().max().item())
    return worst


@pytest.mark.e2e
@pytest.mark.parametrize("zero_stage", [3, 2])
def test_sync_makes_engine_match_trainer(vllm_rollout, tiny_model, zero_stage):
    policy = start_policy(tiny_model, zero_stage, lr=0.05 if zero_stage == 3 else 0.02)  # ends apart from the last test
    batch = fixed_batch()
    train_a_little(policy, batch)
    before = engine_gap(policy, vllm_rollout, batch)
    stats = policy.send_weights(vllm_rollout.engines, WeightSync("object_store", 64 * 1024))  # several buckets
    after = engine_gap(policy, vllm_rollout, batch)
    policy.kill()
    assert before > 100 * TOLERANCE, f"engine already matched the trained policy ({before:.2e})"
    assert after < TOLERANCE, f"after sync the engine differs by {after:.2e}"
    n_tensors = 2 * 2 * 9 + 3  # a generous upper bound would be one call per tensor
    assert 1 < stats["sync_buckets"] < n_tensors


@pytest.mark.e2e
def test_lora_sync_sends_only_the_adapter(ray_cluster, tiny_model):
    """rollout.weight_sync=adapter: vLLM applies the trained adapter as a LoRA request (ZeRO-3, two ranks)."""
    from rlsys.actors.group import Placement, create_placement
    from rlsys.actors.rollout import RolloutGroup, RolloutSpec

    placement = Placement(create_placement(1, gpus=0, cpus=1), [0], num_gpus=0, num_cpus=1)
    rollout = RolloutGroup("vllm", RolloutSpec(model_path=tiny_model, device="cpu", max_model_len=256,
                                               gpu_memory_utilization=0.1, weight_sync="adapter", lora_rank=8),
                           placement, env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"})
    policy = start_policy(tiny_model, 3, lr=0.05, lora=True)
    batch = fixed_batch()
    rollout.wait_ready()
    train_a_little(policy, batch)
    before = engine_gap(policy, rollout, batch)
    stats = [policy.send_weights(rollout.engines, WeightSync("adapter")) for _ in range(2)][-1]  # replaces v1
    after = engine_gap(policy, rollout, batch)
    policy.kill()
    rollout.kill()
    assert before > 100 * TOLERANCE, f"engine already matched the trained adapter ({before:.2e})"
    assert after < TOLERANCE, f"after the adapter sync the engine differs by {after:.2e}"
    assert stats["sync_mb"] < 0.5, f"{stats['sync_mb']:.2f} MB sent: more than the adapter"


@pytest.mark.e2e
def test_lora_grpo_samples_with_the_trained_adapter(pretrained, tmp_path):
    """In a LoRA GRPO run the engines get only the adapter, and sample with it: the sampler's logprobs stay
    those of the policy being trained while the adapter moves."""
    from tests.e2e.conftest import run_job

    metrics = run_job("grpo", tmp_path, f"model.path={pretrained[0] / 'checkpoints' / 'final'}",
                      "model.lora.enabled=true", "trainer.lr=5e-3", "trainer.max_steps=4", "trainer.batch_size=8",
                      "trainer.eval_every=0", "trainer.eval_samples=8")
    assert all(m["perf/sync_mb"] < 0.5 for m in metrics), [m["perf/sync_mb"] for m in metrics]
    assert all(m["rollout/logprob_mismatch_kl"] < 1e-4 for m in metrics), \
        [m["rollout/logprob_mismatch_kl"] for m in metrics]
