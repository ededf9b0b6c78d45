"""The actors of an RL job: policy and critic trainers, a frozen reference and teacher, vLLM rollout engines,
and what the reward needs (reward models, judge engines).

Each role gets its own placement group sized from `cluster.<role>` and `rollout.*`, or with
`cluster.colocate=true` all roles share one group of devices (vLLM sleeps while the trainers run).
"""
from __future__ import annotations

from dataclasses import dataclass

from rlsys.actors.cluster import reserve, shared_placement
from rlsys.actors.group import ActorGroup
from rlsys.actors.rollout import RolloutGroup
from rlsys.actors.weight_sync import resolve as resolve_weight_sync
from rlsys.config.jobs import uses_critic, uses_reference, uses_teacher
from rlsys.roles.engines import rollout_placement, rollout_spec, start_judge_engines
from rlsys.roles.reward_actors import RewardActors, start_reward_actors
from rlsys.roles.train_group import start_train_group


@dataclass
class RLRoles:
    policy: ActorGroup
    reference: ActorGroup | None  # only when a loss or reward reads the reference (algo.kl_coef > 0)
    teacher: ActorGroup | None  # on-policy distillation: distill.teacher, never trained
    rollout: RolloutGroup
    critic: ActorGroup | None
    colocated: bool
    rewards: RewardActors

    def trainers(self) -> dict[str, ActorGroup]:
        return {"policy": self.policy, **({"critic": self.critic} if self.critic else {})}

    def locations(self) -> dict[str, list[dict]]:
        """Each role's actors: pid, node, placement group, GPUs (written to output_dir/placement.json)."""
        groups = {"policy": self.policy, "reference": self.reference, "teacher": self.teacher, "critic": self.critic,
                  "rollout": self.rollout,
                  **self.rewards.groups()}
        return {name: group.locations() for name, group in groups.items() if group is not None}

    def kill(self) -> None:
        for group in (self.policy, self.reference, self.teacher, self.critic, self.rollout):
            if group is not None:
                group.kill()
        self.rewards.kill()


def start_roles(cfg, model_path: str, device: str) -> RLRoles:
    """The roles rlsys/config/jobs.py declares for the job (`rl`), started; any started are killed on failure."""
    c, a = cfg.cluster, cfg.algo
    with_critic, with_reference, with_teacher = uses_critic(cfg), uses_reference(cfg), uses_teacher(cfg)
    reserve(cfg, device)
    sharing = 2 + with_reference + with_teacher + with_critic  # the policy, the engines and the groups beside them
    slots = shared_placement(c.policy.num_ranks, sharing, device, c)[1] if c.colocate else None

    def trainer(role: str, trainable: bool, lr: float | None = None, path: str = model_path) -> ActorGroup:
        placement = slots(c[role].num_ranks) if slots else None
        return start_train_group(role, cfg, path, device, trainable=trainable, lr=lr, placement=placement, wait=False)

    def rollout() -> RolloutGroup:
        placement = slots(cfg.rollout.num_engines) if slots else rollout_placement(cfg, device, cfg.rollout.num_engines)
        spec = rollout_spec(cfg, model_path, device, c.colocate, weight_sync=resolve_weight_sync(cfg, device))
        return RolloutGroup(cfg.rollout.backend, spec, placement)

    started: dict = {}  # killed again if a later role cannot start
    rewards = RewardActors()
    try:
        if not c.colocate:  # vLLM loads in the background while the trainers set up
            started["rollout"] = rollout()
        started["policy"] = trainer("policy", True)
        if with_reference:
            started["reference"] = trainer("reference", False)
        if with_teacher:
            started["teacher"] = trainer("teacher", False, path=cfg.distill.teacher)
        if with_critic:
            started["critic"] = trainer("critic", True, lr=a.critic_lr)
        trainers = [started[name] for name in ("policy", "reference", "teacher", "critic") if name in started]
        if c.colocate:  # on a shared device vLLM sizes its cache from what the trainers left free
            for group in trainers:
                group.wait_ready()
            started["rollout"] = rollout()
        start_reward_actors(cfg, device, rewards, lambda: start_judge_engines(cfg, device))
        for group in trainers:  # they load their models side by side (a no-op when colocated: done above)
            group.wait_ready()
        started["rollout"].wait_ready()
    except BaseException:
        for group in started.values():
            group.kill()
        rewards.kill()
        raise
    return RLRoles(policy=started["policy"], reference=started.get("reference"), teacher=started.get("teacher"),
                   rollout=started["rollout"], critic=started.get("critic"), colocated=c.colocate, rewards=rewards)
