"""The job registry: every job has its preset and controller, and what each job starts is counted in one place."""
from pathlib import Path

import pytest

from rlsys.config.compose import compose_job
from rlsys.config.jobs import JOBS, controller, demand
from rlsys.config.validate import to_typed

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_has_its_preset_and_controller(job):
    assert (CONFIGS / f"{job}.yaml").exists()
    assert callable(controller(job))
    assert to_typed(compose_job(job)).job == job


def roles(job: str, *overrides: str) -> dict[str, tuple[int, float, float]]:
    cfg = to_typed(compose_job(job, list(overrides)))
    (phase,) = JOBS[job].phases(cfg)
    return {r.name: (r.actors, r.cpus, r.gpus) for r in phase}


def test_online_dpo_counts_its_engines_reward_models_and_judge():
    found = roles("dpo", "algo.online=true", "judge.model=J", "judge.num_engines=2",
                  "reward=[{type:model,path:RM},{type:judge}]")
    assert found == {"policy": (2, 1.0, 1.0), "reference": (1, 1.0, 1.0), "rollout": (1, 1.0, 1.0),
                     "reward_model_0": (1, 1.0, 1.0), "judge": (2, 1.0, 1.0)}
    cfg = to_typed(compose_job("dpo", ["algo.online=true", "judge.model=J", "judge.num_engines=2",
                                       "reward=[{type:model,path:RM},{type:judge}]"]))
    assert demand(cfg) == demand(cfg, "cuda") and (demand(cfg).cpus, demand(cfg).gpus) == (7, 7)
    assert demand(cfg, "cpu").gpus == 0


def test_orpo_has_no_reference_and_a_reward_model_is_sized_by_the_policy_group():
    assert set(roles("dpo", "algo.preference_loss=orpo")) == {"policy"}
    assert roles("rm") == {"reward_model": (2, 1.0, 1.0)}


def test_rl_roles_follow_the_algorithm():
    assert set(roles("grpo")) == {"policy", "rollout"}
    assert set(roles("ppo")) == {"policy", "reference", "critic", "rollout"}
    assert roles("grpo", "rollout.num_engines=3", "rollout.tensor_parallel_size=2")["rollout"] == (3, 1.0, 2.0)
    assert set(roles("grpo", "env=calculator", "env.cpus_per_worker=0.5")) == {"policy", "rollout", "environments"}


def test_a_teacher_runs_beside_the_policy_in_on_policy_distillation_and_rl_that_names_one():
    assert roles("distill", "distill.on_policy=true", "distill.teacher=T", "cluster.teacher.num_ranks=2") == {
        "policy": (1, 2.0, 1.0), "teacher": (2, 1.0, 1.0), "rollout": (2, 1.0, 1.0)}
    assert set(roles("grpo", "distill.teacher=T")) == {"policy", "teacher", "rollout"}
    assert set(roles("grpo", "distill.teacher=T", "distill.teacher_kl_coef=0")) == {"policy", "rollout"}
    assert set(roles("grpo")) == {"policy", "rollout"}


def test_on_policy_distillation_trains_with_the_rl_presets_unless_told_otherwise():
    on_policy = to_typed(compose_job("distill", ["distill.on_policy=true"]))
    assert (on_policy.trainer.lr, on_policy.trainer.max_steps, on_policy.rollout.num_engines) == (1.5e-4, 50, 2)
    assert to_typed(compose_job("distill", ["distill.on_policy=true", "trainer.lr=3e-4"])).trainer.lr == 3e-4
    assert to_typed(compose_job("distill", ["distill.on_policy=true", "trainer=sft"])).trainer.max_steps == 30
    assert to_typed(compose_job("distill")).trainer.lr == 1e-3  # offline: the student's SFT


def test_colocated_roles_share_one_bundle_per_policy_rank():
    found = roles("ppo", "cluster=colocate")
    assert found == {"colocated": (2, 4.0, 1.0)}, "policy, reference, critic and the engines on each of 2 devices"


def test_a_job_in_phases_reserves_its_largest_phase():
    cfg = to_typed(compose_job("distill", ["distill.teacher=T", "rollout.num_engines=3"]))
    teacher, student = JOBS["distill"].phases(cfg)
    assert [r.name for r in teacher] == ["teacher"] and [r.name for r in student] == ["policy"]
    assert demand(cfg).cpus == 3
    pipeline = to_typed(compose_job("pipeline", ["pipeline.rl=rm+ppo"]))
    stages = JOBS["pipeline"].phases(pipeline)
    assert len(stages) == 4 and demand(pipeline).cpus == max(sum(r.actors * r.cpus for r in s) for s in stages)


def test_streamed_data_reserves_each_ranks_tokenising_tasks(tmp_path):
    found = roles("pretrain", "data.mixture=[{path: a.jsonl}, {path: b.jsonl}]", "data.stream.num_workers=2")
    assert found["data"] == (2, 2 * 2 * 0.5, 0.0)
