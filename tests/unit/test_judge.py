"""The judge reward's prompt rendering, score parsing and counted parse failures (the LLM replaced by a list)."""

import re
from types import SimpleNamespace

import pytest

from rlsys.config.schema import JUDGE_TEMPLATE
from rlsys.rewards import RewardConfigError, RewardError
from rlsys.rewards.judge import JudgeReward, parse_score, render_judge_prompt


def judge_cfg(**overrides):
    values = dict(template=JUDGE_TEMPLATE, score_pattern=r"-?\d+(?:\.\d+)?", min_score=0.0, max_score=10.0,
                  max_parse_failure_rate=0.5, parse_failure_score=0.0)
    return SimpleNamespace(**{**values, **overrides})


class ScriptedJudge:
    """Answers with the given replies and keeps the prompts it was asked."""

    def __init__(self, replies):
        self.replies, self.asked = replies, []

    def __call__(self, texts):
        self.asked.extend(texts)
        return self.replies[: len(texts)]


def test_template_keeps_other_braces():
    text = render_judge_prompt('{"q": "{prompt}"} -> {completion}', "2 + 2?", "4")
    assert text == '{"q": "2 + 2?"} -> 4'


@pytest.mark.parametrize("reply, expected", [("8", 0.8), ("Score: 10/10", 1.0), ("0", 0.0), ("7.5 because", 0.75),
                                             ("no idea", None), ("42", None), ("-3", None)])
def test_parse_score_maps_the_range_to_unit_interval(reply, expected):
    score = parse_score(reply, re.compile(r"-?\d+(?:\.\d+)?"), 0.0, 10.0)
    assert score == (pytest.approx(expected) if expected is not None else None)


def test_judge_scores_and_counts_failures():
    ask = ScriptedJudge(["9", "garbage", "3"])
    judge = JudgeReward(ask, judge_cfg(parse_failure_score=-1.0))
    scores = judge(["What is 2 + 2?"] * 3, ["4", "5", "6"])
    assert scores == [pytest.approx(0.9), -1.0, pytest.approx(0.3)]
    assert judge.last_stats["judge_parse_failures"] == 1.0
    assert "Question: What is 2 + 2?" in ask.asked[0] and "Answer: 4" in ask.asked[0]


def test_too_many_unparsable_replies_stop_with_an_example():
    judge = JudgeReward(ScriptedJudge(["I cannot say", "hmm", "5"]), judge_cfg())
    with pytest.raises(RewardError, match=r"2 of 3 samples.*'I cannot say'.*judge.score_pattern"):
        judge(["q"] * 3, ["a"] * 3)


def test_capture_group_selects_the_score():
    judge = JudgeReward(ScriptedJudge(["step 1 ... rating=[7]"]), judge_cfg(score_pattern=r"rating=\[(\d+)\]"))
    assert judge(["q"], ["a"]) == [pytest.approx(0.7)]


@pytest.mark.parametrize("overrides, phrase", [({"template": "Rate {prompt}"}, "{completion}"),
                                               ({"score_pattern": "(unclosed"}, "not a regular expression"),
                                               ({"min_score": 5.0, "max_score": 5.0}, "max_score")])
def test_bad_judge_settings_are_named(overrides, phrase):
    with pytest.raises(RewardConfigError, match=re.escape(phrase)):
        JudgeReward(ScriptedJudge([]), judge_cfg(**overrides))
