"""The stages of `rlsys pipeline`: which jobs run for each `pipeline.rl`, what each starts from, and the settings
each stage adds to its job's preset (the user's `pipeline.stages.<stage>` overrides come last and win).
"""
from __future__ import annotations

from pathlib import Path

from rlsys.config.compose import compose_job

# pipeline.rl -> (stage, the stage whose final checkpoint it starts from)
PLANS = {rl: [("pretrain", None), ("sft", "pretrain"), (rl, "sft")] for rl in ("grpo", "ppo", "dpo")}
PLANS["rm+ppo"] = [("pretrain", None), ("sft", "pretrain"), ("rm", "sft"), ("ppo", "sft")]
PLANS["agent"] = [("pretrain", None), ("sft", "pretrain"), ("grpo", "sft")]
# The agent plan's stages on 2 CPU cores (the env preset sets the task, lengths and tokenizer): SFT stops while
# the tool's use is half learned (40 steps: about a third right), so multi-turn GRPO has something to teach.
AGENT_STAGES = {"pretrain": [], "sft": ["trainer.max_steps=40"],
                "grpo": ["trainer.batch_size=16", "trainer.max_steps=150", "trainer.eval_every=50"]}


# The rm+ppo plan's guards against reward hacking: an ensemble of reward heads whose disagreement lowers the
# score, PPO on the normalised and clipped reward, the answer check as the gold monitor, and the run stopped
# with its best checkpoint by gold when the gold falls while the proxy rises. The stop is what keeps held-out
# accuracy above SFT's; without it PPO ends below (README, "Reward hacking").
RM_PPO_STAGES = {"rm": ["algo.reward_heads=4"],
                 "ppo": ["algo.reward_normalize=true", "algo.reward_clip=3.0", "trainer.stop_on_gold_drop=true"]}
ENSEMBLE_PENALTY = 1.0


def final_checkpoint(cfg, stage: str) -> Path:
    return Path(cfg.output_dir) / stage / "checkpoints" / "final"


def stage_config(cfg, stage: str, previous: str | None):
    agent = cfg.pipeline.rl == "agent"
    shared = [f"output_dir={Path(cfg.output_dir) / stage}", f"seed={cfg.seed}",
              f"logger=[{','.join(cfg.logger)}]", f"resume={str(cfg.resume).lower()}",
              f"data.task.seed={cfg.data.task.seed}", f"data.task.heldout_size={cfg.data.task.heldout_size}",
              f"cluster.device={cfg.cluster.device}"]
    shared += (["env=calculator", *AGENT_STAGES[stage]] if agent
               else [f"data.task.max_operand={cfg.data.task.max_operand}"])
    if cfg.pipeline.rl == "rm+ppo":
        shared += RM_PPO_STAGES.get(stage, [])
    if cfg.cluster.address:
        shared.append(f"cluster.address={cfg.cluster.address}")
    if previous:
        shared.append(f"model.path={final_checkpoint(cfg, previous)}")
    if stage == "ppo" and cfg.pipeline.rl == "rm+ppo":  # trained on the reward model; the answer check is gold
        shared.append(f"reward=[{{type:model,name:reward_model,path:'{final_checkpoint(cfg, 'rm')}',"
                      f"ensemble_penalty:{ENSEMBLE_PENALTY}}},{{type:rule,name:answer_match,monitor:true}}]")
    overrides = shared + list(cfg.pipeline.stages.get(stage, []))
    return compose_job(stage, overrides)


def stage_configs(cfg) -> dict:
    """Each stage's config in the order they run, composed (not yet checked: see validate.to_typed)."""
    return {stage: stage_config(cfg, stage, previous) for stage, previous in PLANS[cfg.pipeline.rl]}
