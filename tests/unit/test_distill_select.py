"""Rejection sampling in `rlsys distill`: which of a prompt's sampled answers are kept."""
from rlsys.trainers.distill import select


def test_best_keeps_the_top_scored_answer():
    assert select([0.2, 0.9, 0.5], ["a", "b", "c"], "best", None) == [1]


def test_min_reward_drops_prompts_without_a_passing_answer():
    assert select([0.0, 0.0], ["a", "b"], "best", 1.0) == []
    assert select([0.0, 1.0, 1.0], ["a", "b", "c"], "best", 1.0) == [1], "ties keep sampling order"


def test_all_keeps_every_distinct_passing_answer():
    assert select([1.0, 1.0, 0.0, 1.0], ["42", "42", "41", "forty-two"], "all", 1.0) == [0, 3]


def test_empty_answers_are_never_kept():
    assert select([1.0, 0.5], ["  ", "x"], "best", None) == [1]
