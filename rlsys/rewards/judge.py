"""AI feedback: an LLM judge's replies turned into rewards.

The judge sees each (prompt, completion) through `judge.template` and answers in words; the first match of
`judge.score_pattern` in its reply is the score, mapped from [min_score, max_score] to [0, 1]. A reply with no
score, or one outside the range, is a parse failure: it gets `parse_failure_score`, is counted in
`reward/judge_parse_failures`, and when a batch has too many the run stops with an example reply.
"""
from __future__ import annotations

import re
from typing import Callable

from rlsys.errors import RewardConfigError, RewardError

Ask = Callable[[list[str]], list[str]]  # judge prompts -> the judge's replies


def render_judge_prompt(template: str, prompt: str, completion: str) -> str:
    # replace, not str.format: templates may hold other braces (JSON examples, LaTeX)
    return template.replace("{prompt}", prompt).replace("{completion}", completion)


def parse_score(reply: str, pattern: re.Pattern, min_score: float, max_score: float) -> float | None:
    """The reply's score in [0, 1], or None when it holds no number in range."""
    found = pattern.search(reply)
    if not found:
        return None
    try:
        value = float(found.group(1) if pattern.groups else found.group(0))
    except ValueError:
        return None
    if not min_score <= value <= max_score:
        return None
    return (value - min_score) / (max_score - min_score)


class JudgeReward:
    """A reward term `fn(prompts, completions, **columns)` scored by an LLM judge through `ask`."""

    def __init__(self, ask: Ask, judge_cfg):
        if "{completion}" not in judge_cfg.template:
            raise RewardConfigError("judge.template has no {completion} placeholder, so the judge would never see "
                                    "the answer it scores.")
        if judge_cfg.max_score <= judge_cfg.min_score:
            raise RewardConfigError(f"judge.max_score ({judge_cfg.max_score}) must be above judge.min_score "
                                    f"({judge_cfg.min_score}).")
        try:
            self.pattern = re.compile(judge_cfg.score_pattern)
        except re.error as err:
            raise RewardConfigError(f"judge.score_pattern {judge_cfg.score_pattern!r} is not a regular expression: "
                                    f"{err}.") from None
        self.ask = ask
        self.cfg = judge_cfg
        self.last_stats: dict[str, float] = {}

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float]:
        cfg = self.cfg
        replies = self.ask([render_judge_prompt(cfg.template, p, c) for p, c in zip(prompts, completions)])
        scores = [parse_score(r, self.pattern, cfg.min_score, cfg.max_score) for r in replies]
        failures = [r for r, s in zip(replies, scores) if s is None]
        self.last_stats = {"judge_parse_failures": float(len(failures)),
                           "judge_parse_failure_rate": len(failures) / max(1, len(replies))}
        if failures and len(failures) / len(replies) > cfg.max_parse_failure_rate:
            raise RewardError(f"the judge's reply could not be parsed into a score for {len(failures)} of "
                              f"{len(replies)} samples (more than judge.max_parse_failure_rate="
                              f"{cfg.max_parse_failure_rate}), e.g. {failures[0][:120]!r}. Check judge.template and "
                              f"judge.score_pattern ({cfg.score_pattern!r}, range {cfg.min_score:g}..{cfg.max_score:g}).")
        return [cfg.parse_failure_score if s is None else s for s in scores]
