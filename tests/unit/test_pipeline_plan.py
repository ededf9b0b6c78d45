"""`rlsys pipeline` stage plans: which stages run, what each starts from, and the reward PPO uses after rm."""
import pytest

from rlsys.config.compose import compose_job
from rlsys.config.pipeline_stages import PLANS, stage_config
from rlsys.config.validate import to_typed


@pytest.mark.parametrize("rl, stages", [("grpo", ["pretrain", "sft", "grpo"]), ("ppo", ["pretrain", "sft", "ppo"]),
                                        ("dpo", ["pretrain", "sft", "dpo"]),
                                        ("rm+ppo", ["pretrain", "sft", "rm", "ppo"]),
                                        ("agent", ["pretrain", "sft", "grpo"])])
def test_stages_of_each_plan(rl, stages):
    assert [stage for stage, _ in PLANS[rl]] == stages


def test_rm_then_ppo_scores_with_the_trained_reward_model(tmp_path):
    cfg = to_typed(compose_job("pipeline", [f"output_dir={tmp_path}", "pipeline.rl=rm+ppo",
                                            "pipeline.stages.rm=['trainer.max_steps=7']"]))
    configs = {stage: to_typed(stage_config(cfg, stage, parent)) for stage, parent in PLANS["rm+ppo"]}
    assert configs["rm"].job == "rm" and configs["rm"].trainer.max_steps == 7
    assert configs["rm"].model.path == configs["ppo"].model.path == str(tmp_path / "sft" / "checkpoints" / "final")
    rm, gold = configs["ppo"].reward
    assert (rm.type, rm.path, rm.monitor) == ("model", str(tmp_path / "rm" / "checkpoints" / "final"), False)
    assert (gold.type, gold.name, gold.monitor) == ("rule", "answer_match", True), "the answer check is only watched"
    assert rm.ensemble_penalty > 0 and configs["rm"].algo.reward_heads > 1, "an ensemble whose doubt costs reward"
    assert configs["ppo"].trainer.stop_on_gold_drop and configs["ppo"].algo.reward_normalize
    assert configs["ppo"].output_dir == str(tmp_path / "ppo")


def test_agent_plan_runs_every_stage_on_the_calculator(tmp_path):
    cfg = to_typed(compose_job("pipeline", [f"output_dir={tmp_path}", "pipeline.rl=agent",
                                            "pipeline.stages.grpo=['trainer.max_steps=9']"]))
    configs = {stage: to_typed(stage_config(cfg, stage, parent)) for stage, parent in PLANS["agent"]}
    assert list(configs) == ["pretrain", "sft", "grpo"]
    for stage in configs.values():
        assert stage.env.name == "calculator" and list(stage.data.task.operations) == ["*"]
    assert configs["sft"].trainer.max_steps == 40, "tool SFT stops with the tool half learned"
    assert configs["grpo"].trainer.max_steps == 9, "the user's stage overrides win"
    assert configs["grpo"].model.path == str(tmp_path / "sft" / "checkpoints" / "final")
