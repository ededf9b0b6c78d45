"""Turn a composed config into a typed, checked one, or one readable error that names the key and the fix."""
from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, List

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from rlsys.config.compose import config_groups
from rlsys.config.jobs import JOBS, trains_on_policy, uses_environment
from rlsys.config.schema import JobConfig
from rlsys.config.pipeline_stages import PLANS
from rlsys.errors import ConfigError


def schema_keys(path: str = "") -> list[str] | None:
    """The keys allowed under a dotted path of the schema, or None when the path is free-form (a dict)."""
    node: Any = JobConfig
    for part in [p for p in path.split(".") if p]:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else None
        if fields is None or part not in fields:
            return None
        ftype = fields[part].default_factory() if fields[part].default_factory is not dataclasses.MISSING else None
        if not dataclasses.is_dataclass(ftype):
            return None
        node = type(ftype)
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else None


# keys of earlier versions -> what replaced them
RENAMED = {"trainer.micro_batch_size": "trainer.max_tokens_per_micro_batch (micro-batches are sized by tokens)",
           "algo.name": "algo.advantage (the estimator names the algorithm: group for GRPO, gae for PPO with a "
                        "critic, rloo, reinforce_pp)"}


def unknown_key_message(full_key: str) -> str:
    parent, _, leaf = full_key.rpartition(".")
    allowed = schema_keys(parent) or []
    where = f"in '{parent}'" if parent else "at the top level"
    hint = difflib.get_close_matches(leaf, allowed, n=1)
    suggestion = f" Did you mean '{'.'.join(filter(None, [parent, hint[0]]))}'?" if hint else ""
    if full_key in RENAMED:
        suggestion = f" It is now {RENAMED[full_key]}."
    return (f"unknown config key '{full_key}'.{suggestion} Keys allowed {where}: {', '.join(allowed)}. "
            "See the whole config with `rlsys JOB --cfg job`.")


def check_overrides(overrides: list[str]) -> None:
    """Reject command-line overrides of unknown keys or of the wrong type, before Hydra composes anything."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        raise ConfigError(f"cannot parse override: {str(err).splitlines()[0]}") from None
    schema, groups = OmegaConf.structured(JobConfig), config_groups()
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or key in groups or override.package is not None:
            continue
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):
            allowed = schema_keys(".".join(parts[: depth - 1]))
            if allowed is None:
                break  # inside a free-form mapping (data.columns, pipeline.stages, ...)
            if parts[depth - 1] not in allowed:
                raise ConfigError(unknown_key_message(".".join(parts[:depth])))
        if override.is_sweep_override() or override.is_delete():
            continue
        try:
            OmegaConf.update(schema, key, override.value(), merge=True)
        except ValidationError as err:
            raise ConfigError(f"config key '{key}' cannot be {override.value()!r}: "
                              f"{err.msg.splitlines()[0]}.") from None
        except OmegaConfBaseException:
            continue  # left to the full check after composition


def to_typed(cfg: DictConfig) -> DictConfig:
    """Merge a composed config into the schema: unknown keys and wrong types become ConfigError."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(JobConfig), cfg)
        OmegaConf.resolve(typed)
    except ConfigKeyError as err:
        raise ConfigError(unknown_key_message(err.full_key or str(err.key))) from None
    except ValidationError as err:
        raise ConfigError(f"config key '{err.full_key}' has the wrong type: {err.msg.splitlines()[0]}. "
                          f"Give it a value of type {_type_name(err)}.") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"config error at '{getattr(err, 'full_key', '?')}': {str(err).splitlines()[0]}") from None
    OmegaConf.set_struct(typed, True)
    check_values(typed)
    return typed


def _type_name(err: ValidationError) -> str:
    ref = getattr(err, "ref_type", None)
    return getattr(ref, "__name__", None) or str(ref or "the declared type")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def check_streaming(cfg: DictConfig) -> None:
    d, s = cfg.data, cfg.data.stream
    _require(d.streaming in ("auto", True, False), f"data.streaming is {d.streaming!r}; allowed: auto, true, false.")
    _require(s.piece_mb > 0 and s.num_workers >= 1 and s.cpus_per_worker >= 0 and s.prefetch_pieces >= 1,
             f"data.stream: piece_mb must be positive, num_workers and prefetch_pieces at least 1 and cpus_per_worker "
             f"zero or more; got {s.piece_mb}, {s.num_workers}, {s.prefetch_pieces}, {s.cpus_per_worker}.")
    if not (d.mixture or d.streaming is True):
        return
    _require(cfg.job in ("pretrain", "sft"),
             f"data.mixture and data.streaming=true are for pretrain and sft; `rlsys {cfg.job}` reads its data whole.")
    _require(not (d.mixture and d.train), "set data.mixture or data.train, not both (a one-source mixture is "
                                          "data.mixture=[{path: PATH}]).")
    for number, source in enumerate(d.mixture):
        _require(bool(source.path), f"data.mixture[{number}] needs a path (a file, a folder of shards or hf:NAME).")
        _require(source.weight > 0, f"data.mixture[{number}].weight must be positive, got {source.weight}.")
        _require(source.epochs is None or source.epochs >= 1,
                 f"data.mixture[{number}].epochs must be at least 1 or null (as many as the run needs).")


def check_choices(node: DictConfig, schema: type, path: str = "") -> None:
    """Every setting the schema declares with `one_of` / `each_of` holds one of its values (lists of
    sections, such as the reward terms, item by item)."""
    hints = typing.get_type_hints(schema)
    for spec in dataclasses.fields(schema):
        key, value = f"{path}{spec.name}", node[spec.name]
        if "choices" in spec.metadata:
            allowed = spec.metadata["choices"]
            for item in (value if isinstance(value, ListConfig) else [value]):
                _require(item in allowed, f"config key '{key}' is {_shown(item, quoted=True)}; allowed: "
                                          f"{', '.join(map(_shown, allowed))}.")
            continue
        kind, args = hints[spec.name], typing.get_args(hints[spec.name])
        item_kind = next((a for a in args if typing.get_origin(a) in (list, List)), kind)  # Optional[List[...]]
        if dataclasses.is_dataclass(kind) and value is not None:
            check_choices(value, kind, f"{key}.")
        elif typing.get_origin(item_kind) in (list, List) and value is not None:
            (section,) = typing.get_args(item_kind)
            if dataclasses.is_dataclass(section):
                for index, item in enumerate(value):
                    check_choices(item, section, f"{key}[{index}].")


def _shown(value, quoted: bool = False) -> str:
    """A value as it is written in YAML or on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if quoted and isinstance(value, str) else str(value)


def check_values(cfg: DictConfig) -> None:
    """Impossible values: choices, signs, and batch shapes that cannot be split over the ranks."""
    _require(cfg.job in JOBS, f"config key 'job' is {cfg.job!r}; allowed: {', '.join(JOBS)}.")
    _require(cfg.pipeline.rl in PLANS, f"config key 'pipeline.rl' is {cfg.pipeline.rl!r}; allowed: {', '.join(PLANS)}.")
    check_choices(cfg, JobConfig)
    _require(cfg.resume in (False, None, "auto") or isinstance(cfg.resume, str),
             f"resume is {cfg.resume!r}; use auto, a checkpoint path, or false.")
    t = cfg.trainer
    for key in ("max_steps", "batch_size", "max_tokens_per_micro_batch"):
        _require(t[key] > 0, f"trainer.{key} must be positive, got {t[key]}.")
    for key in ("save_every", "eval_every", "eval_samples", "warmup_steps", "preempt_grace_s"):
        _require(t[key] >= 0, f"trainer.{key} must be zero or positive, got {t[key]}.")
    _require(t.keep_last >= 1, f"trainer.keep_last must be at least 1 (the checkpoint to resume from), got "
                               f"{t.keep_last}.")
    for key, lr in (("trainer.lr", t.lr), ("algo.critic_lr", cfg.algo.critic_lr)):
        _require(lr > 0, f"{key} must be positive, got {lr}.")
    _require(len(t.adam_betas) == 2 and all(0 <= b < 1 for b in t.adam_betas) and t.adam_eps > 0,
             f"trainer.adam_betas must be two numbers in [0, 1) and adam_eps positive, got "
             f"{list(t.adam_betas)} and {t.adam_eps}; e.g. trainer.adam_betas=[0.9,0.999].")
    _require(cfg.data.max_length > 8, f"data.max_length must be above 8, got {cfg.data.max_length}.")
    for role in ("policy", "reference", "teacher", "critic", "reward"):
        group = cfg.cluster[role]
        _require(group.num_ranks >= 1, f"cluster.{role}.num_ranks must be at least 1, got {group.num_ranks}.")
        _require(group.gpus_per_rank >= 0 and group.cpus_per_rank > 0,
                 f"cluster.{role}: gpus_per_rank must be >= 0 and cpus_per_rank > 0.")
    _require(cfg.rollout.num_engines >= 1, "rollout.num_engines must be at least 1.")
    _require(cfg.rollout.max_new_tokens >= 1, f"rollout.max_new_tokens is the answer's length limit: 1 or more, "
                                              f"got {cfg.rollout.max_new_tokens}.")
    _require(cfg.rollout.temperature >= 0, f"rollout.temperature must be 0 (greedy) or more, got "
                                           f"{cfg.rollout.temperature}.")
    _require(0 < cfg.rollout.top_p <= 1, f"rollout.top_p must be in (0, 1], got {cfg.rollout.top_p}.")
    e = cfg.env
    if uses_environment(cfg):
        _require(trains_on_policy(cfg) or cfg.job in ("sft", "pretrain"), f"env is set, but `rlsys {cfg.job}` does "
                 f"not play episodes; environments are for grpo, ppo and on-policy distill (and sft / pretrain, for "
                 f"their demonstrations).")
        _require(e.max_turns >= 1 and e.num_workers >= 1 and e.timeout_s >= 0 and 0 <= e.max_error_rate <= 1,
                 f"env: max_turns and num_workers must be at least 1, timeout_s zero (none) or more and "
                 f"max_error_rate in [0, 1]; got {e.max_turns}, {e.num_workers}, {e.timeout_s}, {e.max_error_rate}.")
        _require(e.max_total_tokens > cfg.rollout.max_new_tokens,
                 f"env.max_total_tokens={e.max_total_tokens} leaves no room for a turn of rollout.max_new_tokens="
                 f"{cfg.rollout.max_new_tokens} tokens after the prompt; raise it.")
    check_streaming(cfg)
    _require(1 <= cfg.serve.port <= 65535, f"serve.port must be a TCP port, 1-65535, got {cfg.serve.port}.")
    for key, seconds in cfg.watchdog.items():
        _require(seconds >= 0, f"watchdog.{key} is a deadline in seconds (0: none), got {seconds}.")
    _require(t.max_tokens_per_micro_batch >= cfg.data.max_length,
             f"trainer.max_tokens_per_micro_batch ({t.max_tokens_per_micro_batch}) must hold one sequence of "
             f"data.max_length ({cfg.data.max_length}) tokens.")
    if trains_on_policy(cfg):
        check_rl(cfg)
    check_distill(cfg)
    check_reward_guards(cfg)
    if cfg.job == "dpo":
        _require(cfg.algo.beta > 0, f"algo.beta must be positive, got {cfg.algo.beta}.")
        _require(0 <= cfg.algo.label_smoothing < 0.5,
                 f"algo.label_smoothing is the share of flipped labels: 0 <= it < 0.5, got {cfg.algo.label_smoothing}.")
    if cfg.job == "eval":
        _require(cfg.eval.against is None or cfg.judge.model not in (None, "policy"),
                 "eval.against compares answers with an LLM judge: set judge.model to a model folder.")
        _require(cfg.eval.against is None or all(k in cfg.eval.pairwise_template for k in
                                                 ("{prompt}", "{answer_a}", "{answer_b}")),
                 "eval.pairwise_template needs {prompt}, {answer_a} and {answer_b}.")
    if any(term.type == "judge" for term in cfg.reward):
        _require(cfg.judge.model is not None, "a reward of type judge needs judge.model: a model folder, or "
                                              "judge.model=policy for the policy to judge its own samples.")


CRITIC_SETTINGS = ("lam", "value_clip", "critic_lr", "critic_warmup_steps")


def check_rl(cfg: DictConfig) -> None:
    """RL settings: batch shapes, bounds, and combinations that would mean nothing (one algorithm, one name)."""
    a, t = cfg.algo, cfg.trainer
    _require(a.n_samples >= 1, f"algo.n_samples must be at least 1, got {a.n_samples}.")
    _require(a.n_samples >= 2 or a.advantage not in ("group", "rloo") or cfg.job == "distill",
             f"algo.advantage={a.advantage} compares samples of one prompt: set algo.n_samples >= 2.")
    _require(not a.dynamic_sampling or a.advantage in ("group", "rloo"),
             f"algo.dynamic_sampling keeps prompts whose samples scored differently, which only matters for "
             f"advantages within a group: use algo.advantage=group or rloo (got {a.advantage}).")
    k = cfg.rollout.max_staleness
    _require(k >= 0, f"rollout.max_staleness is how many policy versions a batch may lag: 0 or more, got {k}.")
    _require(k == 0 or not cfg.cluster.colocate,
             "rollout.max_staleness > 0 samples while the policy trains, which needs engines on devices of "
             "their own: set cluster.colocate=false, or rollout.max_staleness=0.")
    if cfg.cluster.colocate:
        check_colocation(cfg)
    _require(a.is_cap > 0 and 0 <= a.is_low < a.is_high,
             f"algo.is_cap must be positive and 0 <= algo.is_low < algo.is_high, got {a.is_cap}, "
             f"{a.is_low}, {a.is_high}.")
    _require(0 <= a.overlong_buffer < cfg.rollout.max_new_tokens and a.overlong_penalty >= 0,
             f"algo.overlong_buffer must be 0 (off) or fewer tokens than rollout.max_new_tokens "
             f"({cfg.rollout.max_new_tokens}), and algo.overlong_penalty >= 0; got {a.overlong_buffer} and "
             f"{a.overlong_penalty}.")
    _require(a.max_sample_rounds >= 1, f"algo.max_sample_rounds must be at least 1, got {a.max_sample_rounds}.")
    mini = a.mini_batch_size or t.batch_size
    _require(t.batch_size % mini == 0,
             f"algo.mini_batch_size ({mini}) must divide trainer.batch_size ({t.batch_size}).")
    default = OmegaConf.structured(JobConfig).algo
    changed = [key for key in CRITIC_SETTINGS if a[key] != default[key]]
    _require(a.advantage == "gae" or not changed,
             f"algo.{changed[0] if changed else ''} is a setting of the critic, and algo.advantage={a.advantage} has "
             f"none: use algo.advantage=gae (PPO), or leave it at its default.")
    _require(a.scale_by_std or a.advantage == "group",
             f"algo.scale_by_std=false is Dr.GRPO's change to group advantages; algo.advantage={a.advantage} divides "
             f"by no group std.")
    _require(a.gamma == 1.0 or a.advantage in ("gae", "reinforce_pp"),
             f"algo.gamma discounts rewards token by token (algo.advantage=gae or reinforce_pp); "
             f"algo.advantage={a.advantage} scores whole responses.")
    _require(a.kl_controller == "fixed" or a.kl_coef > 0,
             "algo.kl_controller=adaptive scales algo.kl_coef, which is 0: give it a starting value "
             "(e.g. algo.kl_coef=0.01).")


def check_colocation(cfg: DictConfig) -> None:
    """Engines on the trainers' devices: one engine per policy rank at most, each on one device."""
    r, ranks = cfg.rollout, cfg.cluster.policy.num_ranks
    _require(r.tensor_parallel_size == 1,
             f"rollout.tensor_parallel_size={r.tensor_parallel_size} spreads an engine over several GPUs, but a "
             f"colocated engine shares one policy rank's GPU: set rollout.tensor_parallel_size=1, or "
             f"cluster.colocate=false.")
    _require(r.num_engines <= ranks,
             f"rollout.num_engines={r.num_engines} colocated engines would share {ranks} policy device(s), two "
             f"engines on one: set rollout.num_engines to at most cluster.policy.num_ranks ({ranks}), or "
             f"cluster.colocate=false.")


def check_distill(cfg: DictConfig) -> None:
    """The teacher's settings mean something where they are given (distill itself asks for its teacher when it
    runs, so that `rlsys distill --cfg job` works without one)."""
    d = cfg.distill
    _require(d.teacher_kl_coef >= 0, f"distill.teacher_kl_coef weighs the teacher's per-token signal: 0 or more, got "
                                     f"{d.teacher_kl_coef}.")
    _require(not d.on_policy or cfg.job == "distill",
             f"distill.on_policy is a mode of `rlsys distill`; `rlsys {cfg.job}` takes a teacher's per-token signal "
             f"beside its rewards with distill.teacher=PATH (weighted by distill.teacher_kl_coef).")
    _require(not (d.on_policy and d.teacher_kl_coef == 0),
             "on-policy distillation trains on the teacher's signal alone: distill.teacher_kl_coef must be positive.")


def check_reward_guards(cfg) -> None:
    """Ensembles, monitor terms and the gold stop, reward shaping, and the preference jobs' own settings."""
    a, t = cfg.algo, cfg.trainer
    for term in cfg.reward:
        _require(term.ensemble_penalty >= 0, f"reward term '{term.name or term.type}': ensemble_penalty must be >= 0, "
                                              f"got {term.ensemble_penalty}.")
    if t.stop_on_gold_drop:
        _require(cfg.job in ("grpo", "ppo"), f"trainer.stop_on_gold_drop watches RL rollouts; `rlsys {cfg.job}` has none.")
        _require(any(term.monitor for term in cfg.reward),
                 "trainer.stop_on_gold_drop needs a gold reward: mark a term monitor: true, e.g. "
                 "reward=[{type:model,path:RM},{type:rule,name:answer_match,monitor:true}].")
        _require(t.gold_window >= 1 and t.gold_tolerance >= 0,
                 f"trainer.gold_window must be at least 1 and gold_tolerance >= 0, got {t.gold_window} and "
                 f"{t.gold_tolerance}.")
    _require(a.reward_clip >= 0 and a.length_penalty >= 0,
             f"algo.reward_clip (0: off) and algo.length_penalty must be >= 0, got {a.reward_clip} and "
             f"{a.length_penalty}.")
    _require(a.reward_heads >= 1, f"algo.reward_heads is the reward model ensemble's size: 1 or more, got "
                                  f"{a.reward_heads}.")
    _require(a.desirable_weight > 0 and a.undesirable_weight > 0,
             f"algo.desirable_weight and undesirable_weight must be positive, got {a.desirable_weight} and "
             f"{a.undesirable_weight}.")
    if a.online:
        _require(cfg.job == "dpo", f"algo.online is online DPO (rlsys dpo algo.online=true), not `rlsys {cfg.job}`.")
        _require(a.preference_loss != "kto", "algo.online builds pairs (best against worst); use "
                                             "algo.preference_loss=sigmoid, ipo or orpo.")
        _require(a.n_samples >= 2 and a.round_steps >= 1 and 1 <= a.pairs_per_prompt <= a.n_samples // 2,
                 f"online DPO ranks algo.n_samples >= 2 answers per prompt into algo.pairs_per_prompt pairs "
                 f"(at most n_samples / 2) each round of algo.round_steps >= 1 steps; got n_samples={a.n_samples}, "
                 f"pairs_per_prompt={a.pairs_per_prompt}, round_steps={a.round_steps}.")
