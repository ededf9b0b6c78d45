"""Pairwise judging in both orders: position bias cancels, split and unparsable verdicts are ties."""
from rlsys.config.schema import PAIRWISE_TEMPLATE, EvalConfig
from rlsys.rewards.pairwise import compare, verdict

PATTERN = EvalConfig().verdict_pattern


def judge_preferring(word: str):
    """A judge that picks whichever position holds an answer containing `word` (else A)."""
    def ask(prompts: list[str]) -> list[str]:
        return ["B" if word in p.split("Answer B:")[1] else "A" for p in prompts]
    return ask


def test_a_judge_that_prefers_the_model_gives_wins_in_both_orders():
    result = compare(judge_preferring("good"), PAIRWISE_TEMPLATE, PATTERN, ["q1", "q2"], ["good", "bad"],
                     ["bad", "good"])
    assert result.outcomes == ["win", "loss"]
    assert (result.win, result.tie, result.loss, result.unparsed) == (0.5, 0.0, 0.5, 0.0)


def test_a_judge_that_always_picks_the_first_position_decides_nothing():
    result = compare(lambda prompts: ["A"] * len(prompts), PAIRWISE_TEMPLATE, PATTERN, ["q"] * 3, ["x"] * 3,
                     ["y"] * 3)
    assert result.outcomes == ["tie"] * 3 and result.win == result.loss == 0.0


def test_replies_without_a_verdict_are_ties_and_counted():
    result = compare(lambda prompts: ["I cannot say"] * len(prompts), PAIRWISE_TEMPLATE, PATTERN, ["q"], ["x"], ["y"])
    assert result.outcomes == ["tie"] and result.unparsed == 1.0
    assert result.metrics("eval/pairwise")["eval/pairwise/tie_rate"] == 1.0


def test_verdicts_are_read_from_the_first_match():
    import re

    compiled = re.compile(PATTERN)
    assert [verdict(r, compiled) for r in ("B", "a is better", "Tie.", "Answer: B", "none")] == \
        ["B", "A", "tie", "B", None]
