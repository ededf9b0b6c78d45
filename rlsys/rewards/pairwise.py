"""Pairwise comparison by an LLM judge: is the model's answer better than the reference model's?

Each pair is asked twice, with the answers in both positions. The model wins a pair when the judge prefers it
both times and loses when it prefers the reference both times; anything else (a split verdict, "tie", a reply
with no verdict) is a tie, so a judge that always picks one position cancels out instead of deciding.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

Ask = Callable[[list[str]], list[str]]  # judge prompts -> the judge's replies


def render(template: str, prompt: str, answer_a: str, answer_b: str) -> str:
    return template.replace("{prompt}", prompt).replace("{answer_a}", answer_a).replace("{answer_b}", answer_b)


def verdict(reply: str, pattern: re.Pattern) -> str | None:
    """'A', 'B' or 'tie' from the reply's first match, or None when it holds none."""
    found = pattern.search(reply)
    if not found:
        return None
    word = (found.group(1) if pattern.groups else found.group(0)).strip().lower()
    return {"a": "A", "b": "B", "tie": "tie"}.get(word)


@dataclass
class Comparison:
    win: float
    tie: float
    loss: float
    unparsed: float  # share of replies without a verdict
    outcomes: list[str]  # per pair: win | tie | loss

    def metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}/win_rate": self.win, f"{prefix}/tie_rate": self.tie, f"{prefix}/loss_rate": self.loss,
                f"{prefix}/unparsed_frac": self.unparsed}


def compare(ask: Ask, template: str, pattern: str, prompts: list[str], answers: list[str],
            references: list[str]) -> Comparison:
    """The model's answers against the reference's, each pair judged in both orders."""
    compiled = re.compile(pattern)
    first = [render(template, p, a, r) for p, a, r in zip(prompts, answers, references)]  # the model is A
    second = [render(template, p, r, a) for p, a, r in zip(prompts, answers, references)]  # the model is B
    replies = ask(first + second)
    as_a = [verdict(reply, compiled) for reply in replies[:len(prompts)]]
    as_b = [verdict(reply, compiled) for reply in replies[len(prompts):]]
    outcomes = ["win" if (x, y) == ("A", "B") else "loss" if (x, y) == ("B", "A") else "tie"
                for x, y in zip(as_a, as_b)]
    count = max(1, len(outcomes))
    return Comparison(win=outcomes.count("win") / count, tie=outcomes.count("tie") / count,
                      loss=outcomes.count("loss") / count,
                      unparsed=sum(v is None for v in as_a + as_b) / max(1, 2 * len(outcomes)), outcomes=outcomes)
