"""The actors of an RL job: policy and critic trainers, a frozen reference, vLLM rollout engines, and what
the reward needs (reward models, judge engines).

Each role gets its own placement group sized from `cluster.<role>` and `rollout.*`, or with
`cluster.colocate=true` all roles share one group of devices (vLLM sleeps while the trainers run).
"""
from __future__ import annotations

from dataclasses import dataclass

from rlsys.actors.cluster import check_capacity, connect, node_label_resources, shared_placement
from rlsys.actors.group import ActorGroup, Placement, create_placement
from rlsys.actors.rollout import RolloutGroup, RolloutSpec, Sampling
from rlsys.actors.weight_sync import resolve as resolve_weight_sync
from rlsys.trainers.common import engine_settings, start_train_group
from rlsys.trainers.reward_roles import RewardActors, actor_reward_specs, start_reward_actors, uses_judge_engines


@dataclass
class RLRoles:
    policy: ActorGroup
    reference: ActorGroup | None  # only when a loss or reward reads the reference (algo.kl_coef > 0)
    rollout: RolloutGroup
    critic: ActorGroup | None
    colocated: bool
    rewards: RewardActors

    def trainers(self) -> dict[str, ActorGroup]:
        return {"policy": self.policy, **({"critic": self.critic} if self.critic else {})}

    def locations(self) -> dict[str, list[dict]]:
        """Each role's actors: pid, node, placement group, GPUs (written to output_dir/placement.json)."""
        groups = {"policy": self.policy, "reference": self.reference, "critic": self.critic, "rollout": self.rollout,
                  **self.rewards.groups()}
        return {name: group.locations() for name, group in groups.items() if group is not None}

    def kill(self) -> None:
        for group in (self.policy, self.reference, self.critic, self.rollout):
            if group is not None:
                group.kill()
        self.rewards.kill()


def rollout_spec(cfg, model_path: str, device: str, colocated: bool, max_model_len: int | None = None,
                 weight_sync: str = "object_store") -> RolloutSpec:
    r = cfg.rollout
    episodes = bool(cfg.env.name or cfg.env.path)  # an episode grows past its prompt
    max_model_len = max_model_len or (max(cfg.data.max_length, cfg.env.max_total_tokens) if episodes
                                      else cfg.data.max_length)
    return RolloutSpec(model_path=model_path, device=device, dtype=cfg.model.dtype, seed=cfg.seed,
                       max_model_len=max_model_len, tensor_parallel_size=r.tensor_parallel_size,
                       gpu_memory_utilization=r.gpu_memory_utilization if device == "cuda" else min(r.gpu_memory_utilization, 0.2),
                       enable_sleep=colocated and device == "cuda", weight_sync=weight_sync, lora_rank=cfg.model.lora.r)


def rollout_placement(cfg, device: str, num_engines: int) -> Placement:
    gpus = float(cfg.rollout.tensor_parallel_size) if device == "cuda" else 0
    group = create_placement(num_engines, gpus=gpus, cpus=1.0, strategy=cfg.cluster.placement_strategy,
                             extra_resources=node_label_resources(cfg.cluster, "rollout"))
    return Placement(group, list(range(num_engines)), num_gpus=gpus, num_cpus=1.0)


def start_engines(cfg, model_path: str, device: str, num_engines: int, max_model_len: int | None = None,
                  weight_sync: str = "object_store") -> RolloutGroup:
    """Rollout engines on devices of their own: another model than the policy (a judge, a distillation teacher),
    or the policy of a job without colocation (online DPO), its new weights arriving by `weight_sync`."""
    env = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"} if device == "cpu" else {}
    spec = rollout_spec(cfg, model_path, device, False, max_model_len, weight_sync=weight_sync)
    return RolloutGroup(cfg.rollout.backend, spec, rollout_placement(cfg, device, num_engines), env=env)


def rollout_sampling(cfg, stop_token_ids: list[int]) -> Sampling:
    """How the policy samples: algo.n_samples answers per prompt with the rollout.* settings."""
    r = cfg.rollout
    return Sampling(n=cfg.algo.n_samples, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                    max_new_tokens=r.max_new_tokens, stop=list(r.stop), stop_token_ids=stop_token_ids)


def start_judge_engines(cfg, device: str) -> RolloutGroup:
    # the judge's prompt holds the template, the question and the answer: room for four times data.max_length
    return start_engines(cfg, cfg.judge.model, device, cfg.judge.num_engines, cfg.data.max_length * 4)


def reward_devices(cfg) -> tuple[float, float]:
    """(CPUs, GPUs) that reward models and judge engines reserve."""
    models = {t.path for t in actor_reward_specs(cfg) if t.type == "model"}
    judges = cfg.judge.num_engines if uses_judge_engines(cfg) else 0
    r = cfg.cluster.reward
    return (len(models) * r.num_ranks * r.cpus_per_rank + judges,
            len(models) * r.num_ranks * r.gpus_per_rank + judges * cfg.rollout.tensor_parallel_size)


def cpus_needed(cfg) -> float:
    """Logical CPUs the job's actors reserve (a local Ray is started with at least this many)."""
    c = cfg.cluster
    if cfg.job == "dpo":
        reference = c.reference.num_ranks * c.reference.cpus_per_rank if cfg.algo.preference_loss != "orpo" else 0
        online = cfg.rollout.num_engines + reward_devices(cfg)[0] if cfg.algo.online else 0
        return c.policy.num_ranks * c.policy.cpus_per_rank + reference + online
    if cfg.job not in ("grpo", "ppo"):
        return c.policy.num_ranks * c.policy.cpus_per_rank
    return sum(g.num_ranks * g.cpus_per_rank for g in trainer_roles(cfg)) + cfg.rollout.num_engines + reward_devices(cfg)[0]


def uses_reference(cfg) -> bool:
    """The reference model is read only by the KL term (a loss in GRPO, a reward penalty in PPO)."""
    return cfg.algo.kl_coef > 0


def trainer_roles(cfg) -> list:
    """The resources of the trainer-side groups an RL job starts: policy, then reference and critic if used."""
    c = cfg.cluster
    return [c.policy] + ([c.reference] if uses_reference(cfg) else []) + ([c.critic] if cfg.algo.name == "ppo" else [])


def start_roles(cfg, model_path: str, device: str) -> RLRoles:
    c, a = cfg.cluster, cfg.algo
    uses_critic, with_reference = a.name == "ppo", uses_reference(cfg)
    connect(c, cpus_needed=cpus_needed(cfg))
    gpus = (sum(g.num_ranks * g.gpus_per_rank for g in trainer_roles(cfg))
            + cfg.rollout.num_engines * cfg.rollout.tensor_parallel_size + reward_devices(cfg)[1])
    check_capacity(device, c.policy.num_ranks if c.colocate else gpus)
    sharing = 2 + with_reference + uses_critic
    slots = shared_placement(c.policy.num_ranks, sharing, device, c)[1] if c.colocate else None

    def trainer(role: str, trainable: bool, lr: float | None = None) -> ActorGroup:
        placement = slots(c[role].num_ranks) if slots else None
        return start_train_group(role, cfg, model_path, device, trainable=trainable,
                                 engine=engine_settings(cfg, lr=lr), placement=placement)

    env = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"} if device == "cpu" else {}

    def rollout() -> RolloutGroup:
        placement = slots(cfg.rollout.num_engines) if slots else rollout_placement(cfg, device, cfg.rollout.num_engines)
        spec = rollout_spec(cfg, model_path, device, c.colocate, weight_sync=resolve_weight_sync(cfg, device))
        return RolloutGroup(cfg.rollout.backend, spec, placement, env=env)

    started: dict = {}  # killed again if a later role cannot start
    rewards = RewardActors()
    try:
        if not c.colocate:  # vLLM loads in the background while the trainers set up
            started["rollout"] = rollout()
        started["policy"] = trainer("policy", True)
        if with_reference:
            started["reference"] = trainer("reference", False)
        if uses_critic:
            started["critic"] = trainer("critic", True, lr=a.critic_lr)
        if c.colocate:  # on a shared device vLLM sizes its cache from what the trainers left free
            started["rollout"] = rollout()
        start_reward_actors(cfg, device, rewards, lambda: start_judge_engines(cfg, device))
        started["rollout"].wait_ready()
    except BaseException:
        for group in started.values():
            group.kill()
        rewards.kill()
        raise
    return RLRoles(policy=started["policy"], reference=started.get("reference"), rollout=started["rollout"],
                   critic=started.get("critic"), colocated=c.colocate, rewards=rewards)
