"""Settings that take one of a few values: the values, declared once. The schema marks such a setting with
`one_of(...)`, validation refuses anything else, and the code that acts on a value imports its list from here.
(The jobs and the pipeline's plans are registries of their own: jobs.py, pipeline_stages.py.)
"""
from __future__ import annotations

from dataclasses import field
from typing import Any

LOGGERS = ("console", "jsonl", "wandb")
TINY_ARCHITECTURES = ("qwen2", "llama")
OPERATIONS = ("+", "-", "*")  # the embedded task's
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")  # the data files rlsys reads (folders: the files with these)

ADVANTAGES = ("group", "gae", "rloo", "reinforce_pp")  # gae is the one that needs a critic
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_ESTIMATORS = ("k1", "k2", "k3", "abs")
# off-policy corrections by the sampler's logprobs: truncated IS, masked IS, rejection (mask only)
IS_CORRECTIONS = ("none", "tis", "mis", "reject")
IS_LEVELS = ("token", "sequence", "geometric")
PREFERENCE_LOSSES = ("sigmoid", "ipo", "kto", "orpo")
ENSEMBLES = ("mean", "min")  # how a reward model ensemble's heads make one score
REWARD_TYPES = ("rule", "function", "model", "judge", "remote")
WEIGHT_SYNCS = ("object_store", "adapter", "nccl", "ipc")


def one_of(*choices: Any, default: Any = None) -> Any:
    """A dataclass field that takes one of `choices` (its default: `default`, else the first)."""
    return field(default=choices[0] if default is None else default, metadata={"choices": choices})


def each_of(*choices: Any, default: list) -> Any:
    """A list field whose every item is one of `choices`."""
    return field(default_factory=lambda: list(default), metadata={"choices": choices})
