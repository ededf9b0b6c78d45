"""Held-out accuracy: greedy completions of the evaluation prompts checked against their answers."""
from __future__ import annotations

from typing import Callable

from rlsys.rewards import answer_match

Generate = Callable[[list[list[int]]], list[list[int]]]  # prompt ids -> greedy response ids


def evaluate_accuracy(generate: Generate, tokenizer, rows: list[dict], prompt_ids: list[list[int]]) -> tuple[float, list[dict]]:
    """(accuracy, a few samples) over rows that carry an `answer` column."""
    responses = generate(prompt_ids)
    completions = tokenizer.batch_decode(responses, skip_special_tokens=True)
    answers = [str(r["answer"]) for r in rows]
    scores = answer_match([""] * len(rows), completions, answers)
    samples = [{"prompt": r["messages"][-1]["content"], "completion": c, "answer": a, "correct": s}
               for r, c, a, s in list(zip(rows, completions, answers, scores))[:8]]
    return sum(scores) / max(1, len(scores)), samples
