"""Unit tests for rlsys.rewards: extraction, rules, user functions, validation and weighting."""

import math

import numpy as np
import pytest

from rlsys.errors import UserCodeError
from rlsys.rewards import (RULES, RewardConfigError, RewardError, WeightedReward, answer_match, build_reward,
                           call_reward, extract_answer, format_reward, load_reward_function, make_format_reward)


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"first \boxed{3} then \boxed{ 4 }.", "4"),
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
        ("The answer is 42.", "42"),
        ("Answer: $1,234", "1234"),
        ("the answer is 7 apples", "7"),
        ("1,234", "1234"),
        ("85.0", "85"),
        ("85 <|im_end|>", "85"),
        ("85\n<|im_end|>\n", "85"),
        ("I think 3 + 4 gives 7, maybe 8", "8"),
        ("-0.50", "-0.5"),
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answer_match_batch():
    completions = ["85", "85 <|im_end|>", "85.0\n", "84", "no idea", r"\boxed{1,234}", "#### 72"]
    answers = ["85", 85, "85", "85", "85", "1234", "Natalia ... #### 72"]
    assert answer_match([""] * 7, completions, answer=answers) == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_format_reward_default_and_custom():
    completions = ["85", " 12.5 \n", "85<|im_end|>", "85 because", "the answer is 85"]
    assert format_reward([""] * 5, completions) == [1.0, 1.0, 1.0, 0.0, 0.0]
    boxed = make_format_reward(r"\\boxed\{.+\}\s*$")
    assert boxed(["", ""], [r"x \boxed{2}", "2"]) == [1.0, 0.0]
    with pytest.raises(RewardConfigError, match="not a valid regex"):
        make_format_reward("(")


def test_rules_registry():
    assert set(RULES) == {"answer_match", "format", "think_answer"}


@pytest.mark.parametrize("completion, gold, expected", [
    ("<think>3 + 4 is 7, twice that</think><answer>14</answer>", "14", 1.0),
    ("<think>the sum is 9</think> so <answer>The answer is 12</answer>", "12", 1.0),
    ("<think>3 + 4 is 7, and then", "7", 0.0),  # still thinking: no answer yet, whatever the numbers in it
    ("The answer is \\frac{1}{2}", "0.5", 1.0),  # math-verify
    ("\\boxed{x^2 + 1}", "1 + x^2", 1.0),
    ("\\boxed{x^2 + 2}", "1 + x^2", 0.0),
    ("<answer>\\boxed{0.5}</answer>", "\\frac12", 1.0),
])
def test_reasoning_formats_and_mathematical_equivalence(completion, gold, expected):
    pytest.importorskip("math_verify")
    assert answer_match([""], [completion], [gold]) == [expected]


def test_think_answer_format_rule():
    rule = RULES["think_answer"]
    ok = "<think>carry the 1\nso 12</think>\n<answer>12</answer>"
    assert rule([""] * 4, [ok, "<answer>12</answer>", ok + " and more", "<think></think><answer>12</answer>"]) == \
        [1.0, 0.0, 0.0, 0.0]


def test_weighted_sum_with_per_term_arrays():
    reward = WeightedReward([("answer_match", answer_match, 1.0), ("format", format_reward, 0.5)])
    total, per_term = reward(["p", "p", "p"], ["85", "the answer is 85", "3"], {"answer": ["85", "85", "85"]})
    np.testing.assert_allclose(per_term["answer_match"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(per_term["format"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(total, [1.5, 1.0, 0.5])


def _write(tmp_path, body, name="my_rewards.py"):
    path = tmp_path / name
    path.write_text(body)
    return path


def test_user_function_from_file_receives_columns(tmp_path):
    path = _write(
        tmp_path,
        "def score(prompts, completions, answer, difficulty, **_):\n"
        "    return [float(c == a) * d for c, a, d in zip(completions, answer, difficulty)]\n",
    )
    reward = build_reward(
        [
            {"type": "rule", "name": "format", "weight": 1.0},
            {"type": "function", "path": f"{path}:score", "weight": 0.5},
            {"type": "model", "name": "rm", "path": "outputs/rm/checkpoints/final", "weight": 2.0},
        ]
    )
    assert reward.names == ["format", "score"]
    assert reward.model_terms == [{"type": "model", "name": "rm", "path": "outputs/rm/checkpoints/final", "weight": 2.0}]
    total, per_term = reward(["p", "p"], ["4", "5"], {"answer": ["4", "4"], "difficulty": [2.0, 3.0]})
    np.testing.assert_allclose(per_term["score"], [2.0, 0.0])
    np.testing.assert_allclose(total, [2.0, 1.0])


def test_load_module_path():
    assert load_reward_function("rlsys.rewards.rules:answer_match") is answer_match


def test_build_reward_rule_options_and_custom_name(tmp_path):
    path = _write(tmp_path, "def score(prompts, completions, **_):\n    return [1.0] * len(completions)\n")
    reward = build_reward(
        [
            {"type": "rule", "name": "format", "pattern": r"^ok$"},
            {"type": "function", "path": f"{path}:score", "name": "always"},
        ]
    )
    total, per_term = reward(["p", "p"], ["ok", "no"], {})
    assert set(per_term) == {"format", "always"}
    np.testing.assert_allclose(total, [2.0, 1.0])


# --- configuration errors -------------------------------------------------------------------


def test_spec_without_colon():
    with pytest.raises(RewardConfigError, match="expected 'path/file.py:function'"):
        load_reward_function("my_rewards.py")


def test_missing_file_names_path_and_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserCodeError) as err:
        load_reward_function("nope/missing.py:score")
    assert "nope/missing.py" in str(err.value) and str(tmp_path) in str(err.value)


def test_import_error_names_file_and_cause(tmp_path):
    path = _write(tmp_path, "import not_a_real_module_xyz\n", name="broken.py")
    with pytest.raises(UserCodeError) as err:
        load_reward_function(f"{path}:score")
    message = str(err.value)
    assert "broken.py" in message and "ModuleNotFoundError" in message and "not_a_real_module_xyz" in message


def test_missing_function_lists_callables(tmp_path):
    path = _write(tmp_path, "import os\nX = 1\ndef alpha(p, c): ...\ndef beta(p, c): ...\n")
    with pytest.raises(RewardConfigError) as err:
        load_reward_function(f"{path}:score")
    message = str(err.value)
    assert "'score'" in message and "alpha, beta" in message and "os" not in message.split("defines:")[1]


def test_not_callable(tmp_path):
    path = _write(tmp_path, "score = 3\n")
    with pytest.raises(RewardConfigError, match="int, not a callable"):
        load_reward_function(f"{path}:score")


def test_unknown_type_and_rule_list_allowed():
    with pytest.raises(RewardConfigError, match="rule, function, model"):
        build_reward([{"type": "magic"}])
    with pytest.raises(RewardConfigError, match="answer_match, format"):
        build_reward([{"type": "rule", "name": "exact"}])
    with pytest.raises(RewardConfigError, match="invalid weight"):
        build_reward([{"type": "rule", "name": "format", "weight": "high"}])
    with pytest.raises(RewardConfigError, match="duplicate"):
        build_reward([{"type": "rule", "name": "format"}, {"type": "rule", "name": "format"}])


# --- run-time errors ------------------------------------------------------------------------

PROMPTS, COMPLETIONS = ["p"] * 4, ["a", "b", "c", "d"]


def _raises(prompts, completions, **_):
    raise KeyError("answer")


@pytest.mark.parametrize(
    "fn, expected",
    [
        (_raises, "'bad' raised KeyError: 'answer'"),
        (lambda p, c, **_: {"a": 1.0}, "'bad' returned dict"),
        (lambda p, c, **_: [1.0, 0.0, 1.0], "returned 3 values for 4 completions"),
        (lambda p, c, **_: [1.0, 0.0, math.nan, 1.0], "returned NaN at index 2"),
        (lambda p, c, **_: [1.0, -math.inf, 0.0, 1.0], "returned inf at index 1"),
        (lambda p, c, **_: [1.0, "0.5", 0.0, 1.0], "non-numeric value '0.5' (str) at index 1"),
        (lambda p, c, **_: [1.0, None, 0.0, 1.0], "non-numeric value None"),
    ],
)
def test_call_reward_errors(fn, expected):
    with pytest.raises(RewardError) as err:
        call_reward("bad", fn, PROMPTS, COMPLETIONS, {})
    assert expected in str(err.value)
    assert "'bad'" in str(err.value)


def test_call_reward_accepts_arrays_and_numpy_scalars():
    scores = call_reward("ok", lambda p, c, **_: np.array([1, 0, 1, 0]), PROMPTS, COMPLETIONS, {})
    assert scores.dtype == np.float64 and scores.tolist() == [1.0, 0.0, 1.0, 0.0]
    scores = call_reward("ok", lambda p, c, **_: [np.float32(0.5), True, 0, 2], PROMPTS, COMPLETIONS, {})
    assert scores.tolist() == [0.5, 1.0, 0.0, 2.0]


def test_call_reward_rejects_misaligned_columns():
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 4"):
        call_reward("ok", lambda p, c, **_: [0.0] * 4, PROMPTS, COMPLETIONS, {"answer": ["1"]})
