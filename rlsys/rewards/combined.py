"""Validated calls to reward functions and their weighted combination, built from config specs.

Reward-model and judge scores (``type: model`` / ``judge``) come from rlsys.actors owned by the trainer: without
``actor_term`` ``build_reward`` only checks and records those specs in ``WeightedReward.model_terms``; the
trainer builds the reward again, once its actors run, with ``actor_term`` turning each spec into a function.
A function with ``takes_messages = True`` also receives each sample's prompt conversation as ``messages``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
from ray.exceptions import RayError

from rlsys.config.choices import REWARD_TYPES
from rlsys.errors import RewardConfigError, RewardError
from rlsys.rewards.rules import RULE_FACTORIES, RULES
from rlsys.rewards.user_function import load_reward_function

RewardFn = Callable[..., Any]
REMOTE_KEYS = ("url", "token", "timeout_s", "max_retries")  # the config gives every term these; only remote reads them
# keys every term may carry that are not a rule's options: reward-model ensembles, and monitor-only terms
TERM_KEYS = ("type", "name", "weight", "monitor", "ensemble", "ensemble_penalty", *REMOTE_KEYS)
_CONTRACT = "a reward function must return a list with one finite float per completion"


def _as_list(name: str, result: Any) -> list[Any]:
    if isinstance(result, (list, tuple)):
        return list(result)
    if isinstance(result, np.ndarray) and result.ndim == 1:
        return result.tolist()
    if hasattr(result, "tolist") and getattr(result, "ndim", None) == 1:  # e.g. a torch tensor
        return result.tolist()
    raise RewardError(f"reward function '{name}' returned {type(result).__name__}; {_CONTRACT}")


def call_reward(
    name: str,
    fn: RewardFn,
    prompts: Sequence[str],
    completions: Sequence[str],
    columns: Mapping[str, Sequence[Any]],
) -> np.ndarray:
    """Call ``fn(prompts, completions, **columns)`` and return its scores as float64, validated."""
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"got {len(prompts)} prompts for {n} completions; repeat prompts per sample")
    for column, values in columns.items():
        if len(values) != n:
            raise ValueError(f"column '{column}' has {len(values)} values for {n} completions")
    try:
        result = fn(list(prompts), list(completions), **accepted(fn, columns))
    except (RewardError, RayError):
        raise  # already a readable message (remote, judge), or a dead actor the training loop recovers from
    except Exception as exc:
        raise RewardError(
            f"reward function '{name}' raised {type(exc).__name__}: {exc}; fix the function "
            f"(it received columns: {', '.join(columns) or 'none'})"
        ) from exc
    values = _as_list(name, result)
    if len(values) != n:
        raise RewardError(f"reward function '{name}' returned {len(values)} values for {n} completions; {_CONTRACT}")
    for i, value in enumerate(values):
        if not isinstance(value, Real):  # bool and numpy scalars are Real; str/None are not
            raise RewardError(
                f"reward function '{name}' returned non-numeric value {value!r} ({type(value).__name__}) "
                f"at index {i}; {_CONTRACT}"
            )
        if math.isnan(value) or math.isinf(value):
            kind = "NaN" if math.isnan(value) else "inf"
            raise RewardError(f"reward function '{name}' returned {kind} at index {i}; {_CONTRACT}")
    return np.asarray(values, dtype=np.float64)


class WeightedReward:
    """Weighted sum of named reward terms; per-term raw (unweighted) scores are kept for metrics.

    Terms named in `monitors` are scored and reported but left out of the sum: a gold signal watched next to
    the proxy the policy is trained on (`gold()` is their weighted sum).
    """

    def __init__(self, terms: list[tuple[str, RewardFn, float]], model_terms: list[dict] | None = None,
                 monitors: Sequence[str] = ()):
        names = [name for name, _, _ in terms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RewardConfigError(f"duplicate reward names {duplicates}; give each term a unique 'name'")
        self.terms = list(terms)
        # Specs of reward-model terms; scored by the trainer's reward-model actors, not here.
        self.model_terms = list(model_terms or [])
        self.monitors = set(monitors)

    def gold(self, per_term: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """The weighted sum of the monitored terms' scores (None without any)."""
        if not self.monitors:
            return None
        return sum(weight * per_term[name] for name, _, weight in self.terms if name in self.monitors)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.terms]

    def required_columns(self) -> dict[str, list[str]]:
        """term -> the data columns it reads and has no default for."""
        return {name: required_columns(fn) for name, fn, _ in self.terms}

    def stats(self) -> dict[str, float]:
        """What terms report about their last call besides scores (e.g. a judge's parse failures)."""
        return {key: value for _, fn, _ in self.terms for key, value in getattr(fn, "last_stats", {}).items()}

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], columns: Mapping[str, Sequence[Any]] | None = None,
        messages: Sequence[list[dict]] | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        columns = dict(columns or {})
        if messages is None:  # no conversations given: each prompt as one user turn
            messages = [[{"role": "user", "content": p}] for p in prompts]
        total = np.zeros(len(completions), dtype=np.float64)
        per_term: dict[str, np.ndarray] = {}
        for name, fn, weight in self.terms:
            term_columns = {**columns, "messages": messages} if getattr(fn, "takes_messages", False) else columns
            scores = call_reward(name, fn, prompts, completions, term_columns)
            per_term[name] = scores
            if name not in self.monitors:
                total += weight * scores
        return total, per_term


def accepted(fn: RewardFn, columns: Mapping[str, Sequence[Any]]) -> dict[str, Sequence[Any]]:
    """The columns fn takes: all of them with **kwargs, else those it names (a data set's extra columns, such as
    an id, need not appear in every reward function's signature)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(columns)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return dict(columns)
    return {k: v for k, v in columns.items() if k in params}


def required_columns(fn: RewardFn) -> list[str]:
    """The parameters after (prompts, completions) without a default: columns the function cannot do without."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: nothing to read
        return []
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return [p.name for p in named[2:] if p.default is p.empty and p.name != "messages"]


def _weight(spec: dict) -> float:
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, Real) or not math.isfinite(weight):
        raise RewardConfigError(f"reward spec {spec} has invalid weight {weight!r}; expected a finite number")
    return float(weight)


def _rule_term(spec: dict) -> tuple[str, RewardFn, float]:
    rule = spec.get("name")
    if rule not in RULES:
        raise RewardConfigError(f"unknown rule reward {rule!r}; available rules: {', '.join(sorted(RULES))}")
    options = {k: v for k, v in spec.items() if k not in TERM_KEYS}
    if options and rule not in RULE_FACTORIES:
        raise RewardConfigError(f"rule '{rule}' takes no options, got {sorted(options)}")
    fn = RULE_FACTORIES[rule](**options) if options else RULES[rule]
    return rule, fn, _weight(spec)


def _function_term(spec: dict) -> tuple[str, RewardFn, float]:
    path = spec.get("path")
    if not path:
        raise RewardConfigError(f"function reward spec {spec} needs 'path': 'path/file.py:function'")
    fn = load_reward_function(str(path))
    return spec.get("name") or str(path).rpartition(":")[2], fn, _weight(spec)


def _remote_term(spec: dict) -> tuple[str, RewardFn, float]:
    url = spec.get("url")
    if not url:
        # the spec is not echoed: it may hold the token
        raise RewardConfigError(f"remote reward '{spec.get('name') or 'remote'}' needs 'url': http://host:port")
    # imported here so httpx loads only when a remote term is configured
    from rlsys.rewards.remote import RemoteReward

    options = {key: spec[key] for key in ("token", "timeout_s", "max_retries") if spec.get(key) is not None}
    return spec.get("name") or "remote", RemoteReward(str(url), **options), _weight(spec)


def plain_specs(terms) -> list[dict]:
    """Reward terms from the config as plain dicts without unset keys (what `build_reward` takes)."""
    from omegaconf import OmegaConf

    return [{k: v for k, v in term.items() if v is not None} for term in OmegaConf.to_container(terms, resolve=True)]


def build_reward(specs: Sequence[Mapping[str, Any]],
                 actor_term: Callable[[dict], tuple[str, RewardFn]] | None = None) -> WeightedReward:
    """Build the reward from config entries, e.g. ``{"type": "rule", "name": "answer_match", "weight": 1.0}``,
    ``{"type": "function", "path": "my_rewards.py:score", "weight": 0.5}``,
    ``{"type": "remote", "url": "http://10.0.0.5:8000"}``. ``type: model`` and ``judge`` entries are
    skipped here and exposed as ``model_terms`` for the trainer to score with its actors.
    """
    terms, model_terms, monitors = [], [], []
    for raw in specs:
        if not isinstance(raw, Mapping):
            raise RewardConfigError(f"reward spec {raw!r} must be a mapping with a 'type' key")
        spec = dict(raw)  # also converts OmegaConf DictConfig
        kind = spec.get("type")
        count = len(terms)
        if kind == "rule":
            terms.append(_rule_term(spec))
        elif kind == "function":
            terms.append(_function_term(spec))
        elif kind == "remote":
            terms.append(_remote_term(spec))
        elif kind in ("model", "judge"):
            weight = _weight(spec)
            if kind == "model" and not spec.get("path"):
                raise RewardConfigError(f"model reward spec {spec} needs 'path': a reward model folder (rlsys rm)")
            if actor_term is None:
                model_terms.append(spec)
            else:
                terms.append((*actor_term(spec), weight))
        else:
            raise RewardConfigError(f"unknown reward type {kind!r} in {spec}; expected one of: {', '.join(REWARD_TYPES)}")
        if spec.get("monitor") and len(terms) > count:
            monitors.append(terms[-1][0])
    if specs and terms and len(monitors) == len(terms) and not model_terms:
        raise RewardConfigError("every reward term is marked monitor: true, so nothing is left to train on; "
                                "leave at least one term unmonitored")
    return WeightedReward(terms, model_terms=model_terms, monitors=monitors)
