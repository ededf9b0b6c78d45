"""Every job, declared once: its line of help, the controller that runs it, and the actors it starts.

A job's preset is configs/<name>.yaml. What it starts is a function of its config (`phases`): the roles that
run at the same time, phase after phase (distillation's teacher, then its student). The CLI lists the jobs from
here, validation knows their names, and the local Ray, the capacity check, the pipeline and `rlsys k8s` are
sized by `demand`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlsys.config.choices import DATA_SUFFIXES

SELF_JUDGE = "policy"  # judge.model=policy: the policy judges its own samples on its own engines
AUTO_STREAM_BYTES = 256 * 2**20  # data.streaming=auto streams data.train above this size


@dataclass(frozen=True)
class Role:
    """`actors` Ray actors (or tasks) of one kind, each reserving `cpus` logical CPUs and `gpus` GPUs. `kind` says
    what each holds in memory: a model it trains (`trainer`), one it only runs (`frozen`), a vLLM `engine`, or no
    model (`light`: data tasks, environments); `setting` is the config key that sizes it."""
    name: str
    actors: int
    cpus: float
    gpus: float = 0.0
    kind: str = "light"
    setting: str = ""
    processes: int = 1  # processes each actor's slot runs (colocation: one per role sharing the device)


@dataclass(frozen=True)
class Demand:
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Job:
    help: str
    controller: str  # "module:function", imported when the job runs, so that `rlsys --help` stays fast
    phases: Callable[[Any], list[list[Role]]]


# ---- what a config implies --------------------------------------------------------------------------------
def uses_reference(cfg) -> bool:
    """RL reads the reference only in its KL term; DPO, IPO and KTO always (ORPO and reward models never)."""
    if cfg.job == "dpo":
        return cfg.algo.preference_loss != "orpo"
    return cfg.job in ("grpo", "ppo") and cfg.algo.kl_coef > 0


def trains_on_policy(cfg) -> bool:
    """Jobs run by the RL controller: GRPO, PPO, and on-policy distillation."""
    return cfg.job in ("grpo", "ppo") or (cfg.job == "distill" and cfg.distill.on_policy)


def uses_teacher(cfg) -> bool:
    """A teacher scores the sampled tokens: on-policy distillation, or GRPO / PPO given distill.teacher."""
    return trains_on_policy(cfg) and bool(cfg.distill.teacher) and cfg.distill.teacher_kl_coef > 0


def uses_critic(cfg) -> bool:
    return cfg.job in ("grpo", "ppo") and cfg.algo.advantage == "gae"


def uses_environment(cfg) -> bool:
    return bool(cfg.env.name or cfg.env.path)


def reward_model_paths(terms) -> list[str]:
    """The reward models the terms score with, each started once."""
    return list(dict.fromkeys(t.path for t in terms if t.type == "model"))


def judge_has_engines(cfg, terms) -> bool:
    """A judge term served by engines of its own (judge.model=policy uses the policy's)."""
    return any(t.type == "judge" for t in terms) and cfg.judge.model not in (None, SELF_JUDGE)


def streams(cfg) -> bool:
    """Whether the job reads its training data as a stream (pretrain and SFT only)."""
    if cfg.job not in ("pretrain", "sft"):
        return False
    if cfg.data.mixture:
        return True
    if cfg.data.streaming == "auto":
        return bool(cfg.data.train) and not cfg.data.train.startswith("hf:") and _size(cfg.data.train) > AUTO_STREAM_BYTES
    return bool(cfg.data.streaming)


def _size(spec: str) -> int:
    path = Path(spec).expanduser()
    if not path.exists():
        return 0  # the reader says that it is missing, with the fix
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files if p.suffix in DATA_SUFFIXES and p.is_file())


# ---- the roles ------------------------------------------------------------------------------------------
def group(name: str, resources, kind: str = "trainer", section: str | None = None) -> Role:
    """A trainer-side group sized by a `cluster.<role>` section."""
    return Role(name, resources.num_ranks, resources.cpus_per_rank, resources.gpus_per_rank, kind,
                f"cluster.{section or name}.num_ranks")


def engines(name: str, count: int, cfg, setting: str = "rollout.num_engines") -> Role:
    return Role(name, count, 1.0, float(cfg.rollout.tensor_parallel_size), "engine", setting)


def reward_actors(cfg, terms) -> list[Role]:
    """Reward models (frozen groups sized by cluster.reward) and judge engines that reward terms need."""
    roles = [group(f"reward_model_{i}", cfg.cluster.reward, "frozen", "reward")
             for i, _ in enumerate(reward_model_paths(terms))]
    if judge_has_engines(cfg, terms):
        roles.append(engines("judge", cfg.judge.num_engines, cfg, "judge.num_engines"))
    return roles


def environments(cfg) -> list[Role]:
    return ([Role("environments", cfg.env.num_workers, cfg.env.cpus_per_worker, setting="env.num_workers")]
            if uses_environment(cfg) else [])


def supervised(cfg) -> list[list[Role]]:
    """The policy's ranks; streamed data: each rank's tokenising tasks; tool SFT: environments for evaluation."""
    p, s = cfg.cluster.policy, cfg.data.stream
    data = [Role("data", p.num_ranks, (len(cfg.data.mixture) or 1) * s.num_workers * s.cpus_per_worker,
                 setting="data.stream.num_workers")]
    return [[group("policy", p), *(data if streams(cfg) else []), *environments(cfg)]]


def rl(cfg) -> list[list[Role]]:
    """Policy, reference and critic groups and the rollout engines, on devices of their own; colocated: one bundle
    per policy rank that all of them share. Reward models, judges and environments beside them."""
    c = cfg.cluster
    trainers = [group("policy", c.policy),
                *([group("reference", c.reference, "frozen")] if uses_reference(cfg) else []),
                *([group("teacher", c.teacher, "frozen")] if uses_teacher(cfg) else []),
                *([group("critic", c.critic)] if uses_critic(cfg) else [])]
    # colocated: each policy rank's bundle runs a process per trainer-side role and an engine
    placed = ([Role("colocated", c.policy.num_ranks, float(len(trainers) + 1), 1.0, "trainer",
                    "cluster.policy.num_ranks", processes=len(trainers) + 1)] if c.colocate
              else [*trainers, engines("rollout", cfg.rollout.num_engines, cfg)])
    return [[*placed, *reward_actors(cfg, cfg.reward), *environments(cfg)]]


def preference(cfg) -> list[list[Role]]:
    """The trained model (sized by cluster.policy), the reference; online DPO: rollout engines and reward actors."""
    c = cfg.cluster
    roles = [group("policy" if cfg.job == "dpo" else "reward_model", c.policy, section="policy"),
             *([group("reference", c.reference, "frozen")] if uses_reference(cfg) else [])]
    if cfg.job == "dpo" and cfg.algo.online:
        roles += [engines("rollout", cfg.rollout.num_engines, cfg), *reward_actors(cfg, cfg.reward)]
    return [roles]


def distill(cfg) -> list[list[Role]]:
    """Offline: the teacher's engines and reward actors; then the student, trained like SFT. On-policy: the RL
    roles, with the teacher beside the policy."""
    if cfg.distill.on_policy:
        return rl(cfg)
    return [[engines("teacher", cfg.rollout.num_engines, cfg), *reward_actors(cfg, cfg.reward)],
            [group("policy", cfg.cluster.policy)]]


def evaluation(cfg) -> list[list[Role]]:
    """Each model's engines in turn, the reward actors of eval.reward (else reward), and a judge for eval.against."""
    terms = cfg.eval.reward if cfg.eval.reward is not None else cfg.reward
    roles = [engines("rollout", cfg.rollout.num_engines, cfg), *reward_actors(cfg, terms)]
    if cfg.eval.against and not judge_has_engines(cfg, terms):
        roles.append(engines("judge", cfg.judge.num_engines, cfg, "judge.num_engines"))
    return [roles]


def pipeline(cfg) -> list[list[Role]]:
    """Every stage's phases, one stage after another."""
    from rlsys.config.pipeline_stages import stage_configs

    return [phase for stage in stage_configs(cfg).values() for phase in JOBS[stage.job].phases(stage)]


JOBS: dict[str, Job] = {
    "pipeline": Job("pretrain -> SFT -> GRPO (or PPO, DPO, rm+ppo) on the embedded task; held-out accuracy per stage",
                    "rlsys.trainers.pipeline:run", pipeline),
    "pretrain": Job("next-token pretraining on packed raw text; large sources streamed, mixed by weight "
                    "(data.mixture)", "rlsys.trainers.supervised:train", supervised),
    "sft": Job("supervised fine-tuning on chat data, loss on assistant tokens only (optional LoRA, packing, "
               "streaming)", "rlsys.trainers.supervised:train", supervised),
    "grpo": Job("GRPO: vLLM rollouts, group-normalised advantages, policy / reference / rollout actors",
                "rlsys.trainers.rl:train", rl),
    "ppo": Job("PPO: GAE with a critic, clipped policy and value losses, KL to the reference",
               "rlsys.trainers.rl:train", rl),
    "rm": Job("a reward model (or an ensemble of heads) on preference pairs, Bradley-Terry; loads in transformers",
              "rlsys.trainers.preference:train", preference),
    "dpo": Job("DPO / IPO / KTO / ORPO on preference data; algo.online=true: pairs of the policy's own samples",
               "rlsys.trainers.preference:train", preference),
    "distill": Job("a teacher (distill.teacher) answers the prompts, the best answers fine-tune the student "
                   "(model.path); distill.on_policy=true: the student samples, the teacher grades every token",
                   "rlsys.trainers.distill:run", distill),
    "eval": Job("score checkpoints (eval.models) on data.eval by reward terms, and against eval.against by a judge",
                "rlsys.trainers.eval_job:run", evaluation),
    "serve-reward": Job("an HTTP reward server (bearer token, size limits) over any reward: rules, model, judge",
                        "rlsys.launchers.serve_reward:run", lambda cfg: [reward_actors(cfg, cfg.reward)]),
    "curate": Job("data curation on Ray Data: quality rules, exact and near dedup, quality classifier, funnel "
                  "report", "rlsys.curation.curate:run", lambda cfg: [[Role("data", 1, 1.0)]]),
}


def demand(cfg, device: str = "cuda") -> Demand:
    """The logical CPUs and GPUs the job reserves at most at once (no GPUs unless it runs on them)."""
    phases = JOBS[cfg.job].phases(cfg) or [[]]
    totals = [Demand(sum(r.actors * r.cpus for r in phase), sum(r.actors * r.gpus for r in phase)) for phase in phases]
    return Demand(max(t.cpus for t in totals), max(t.gpus for t in totals) if device == "cuda" else 0.0)


def controller(job: str) -> Callable:
    """The function that runs `job`, imported now."""
    import importlib

    module, _, function = JOBS[job].controller.partition(":")
    return getattr(importlib.import_module(module), function)
