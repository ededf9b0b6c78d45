"""The embedded arithmetic task: determinism, disjoint splits, correct answers, stage views."""

from __future__ import annotations

import re

import pytest

from rlsys.data.task import ArithmeticTask, Problem, plausible_wrong_answer

SMALL = dict(max_operand=30, heldout_size=100)
# A Q/A pair in either pretraining format: plain "What is 3 + 4? 7" or a ChatML turn.
QA = re.compile(r"(What is \d+ [-+*] \d+\?)(?: |<\|im_end\|>\n<\|im_start\|>assistant\n)(-?\d+)")


def _pairs(doc: str) -> list[tuple[str, str]]:
    return QA.findall(doc)


def _value(p: Problem) -> int:
    return {"+": p.a + p.b, "-": p.a - p.b, "*": p.a * p.b}[p.op]


def test_default_task_sizes():
    task = ArithmeticTask()
    assert len(task.problems("heldout")) == task.heldout_size == 500
    assert len(task.problems("train")) == task.space_size - 500


def test_deterministic_under_seed():
    for method in ("problems", "pretrain_texts", "sft_conversations", "preference_pairs", "rl_prompts"):
        for split in ("train", "heldout"):
            a = getattr(ArithmeticTask(seed=3, **SMALL), method)(split)
            b = getattr(ArithmeticTask(seed=3, **SMALL), method)(split)
            assert a == b, (method, split)
    assert ArithmeticTask(seed=1, **SMALL).problems("heldout") != ArithmeticTask(seed=2, **SMALL).problems("heldout")


@pytest.mark.parametrize(
    "knobs",
    [
        {},
        {"operations": ("+", "-")},
        {"operations": ("*",), "max_operand": 20, "heldout_size": 50},
        {"max_operand": 999, "train_size": 5000},  # sampled (not enumerated) space
    ],
)
def test_splits_disjoint_and_answers_correct(knobs):
    task = ArithmeticTask(seed=7, **knobs)
    train, held = task.problems("train"), task.problems("heldout")
    assert len(held) == task.heldout_size
    train_keys = {p.key for p in train}
    held_keys = {p.key for p in held}
    assert len(train_keys) == len(train) and len(held_keys) == len(held)  # no duplicates
    assert not train_keys & held_keys
    for p in train[:2000] + held:
        assert p.answer == str(_value(p))
        assert p.question == f"What is {p.a} {p.op} {p.b}?"
        assert task.min_operand <= p.a <= task.max_operand and task.min_operand <= p.b <= task.max_operand
        assert int(p.answer) >= 0  # allow_negative=False


def test_every_view_keeps_heldout_out_of_train():
    task = ArithmeticTask(seed=5, **SMALL)
    held_q = {p.question for p in task.problems("heldout")}
    for doc in task.pretrain_texts("train"):
        assert not {q for q, _ in _pairs(doc)} & held_q
    for conv in task.sft_conversations("train"):
        assert not {m["content"] for m in conv["messages"] if m["role"] == "user"} & held_q
    assert not {p["prompt"][0]["content"] for p in task.preference_pairs("train")} & held_q
    assert not {r["messages"][0]["content"] for r in task.rl_prompts("train")} & held_q


def test_unknown_split_raises():
    task = ArithmeticTask(**SMALL)
    for method in ("problems", "pretrain_texts", "sft_conversations", "preference_pairs", "rl_prompts"):
        with pytest.raises(ValueError, match="train, heldout"):
            getattr(task, method)("test")


def test_bad_knobs_raise():
    with pytest.raises(ValueError, match="operation"):
        ArithmeticTask(operations=("/",))
    with pytest.raises(ValueError):
        ArithmeticTask(max_operand=3, heldout_size=500)


def test_pretrain_texts_cover_split():
    task = ArithmeticTask(seed=1, **SMALL)
    docs = task.pretrain_texts("train")
    pairs = [pair for d in docs for pair in _pairs(d)]
    assert all(len(_pairs(d)) <= task.lines_per_document for d in docs)
    assert sorted(pairs) == sorted((p.question, p.answer) for p in task.problems("train"))
    twice = ArithmeticTask(seed=1, pretrain_repeats=2, **SMALL).pretrain_texts("train")
    assert len([pair for d in twice for pair in _pairs(d)]) == 2 * len(pairs)


def test_pretrain_texts_formats():
    task = ArithmeticTask(seed=3)
    docs = task.pretrain_texts("train")
    chat = [d for d in docs if d.startswith("<|im_start|>user\n")]
    plain = [d for d in docs if d.startswith("What is ")]
    assert len(chat) + len(plain) == len(docs)
    assert 0.4 <= len(chat) / len(docs) <= 0.6  # pretrain_chat_fraction=0.5
    assert plain[0].split("\n")[0].count("?") == 1 and "<|" not in plain[0]
    assert chat[0].endswith("<|im_end|>\n")
    only_plain = ArithmeticTask(seed=3, pretrain_chat_fraction=0.0).pretrain_texts("heldout")
    assert all("<|" not in d for d in only_plain)


def test_sft_conversations_multi_turn_share():
    task = ArithmeticTask(seed=2)
    convs = task.sft_conversations("train")
    answers = {p.question: p.answer for p in task.problems("train")}
    n_turns = []
    for c in convs:
        msgs = c["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2)
        for q, a in zip(msgs[::2], msgs[1::2]):
            assert a["content"] == answers[q["content"]]  # bare number string
        n_turns.append(len(msgs) // 2)
    assert set(n_turns) == {1, 2, 3}
    share = sum(n > 1 for n in n_turns) / len(n_turns)
    assert 0.17 <= share <= 0.23
    assert sum(n_turns) == len(task.problems("train"))  # each problem used once


def test_preference_pairs():
    task = ArithmeticTask(seed=4, operations=("+", "-"))
    pairs = task.preference_pairs("train")
    assert len(pairs) == len(task.problems("train"))
    for pair, p in zip(pairs, task.problems("train")):
        assert pair["prompt"] == [{"role": "user", "content": p.question}]
        assert pair["chosen"] == p.answer
        assert pair["rejected"] != pair["chosen"]
        assert pair["rejected"].lstrip("-").isdigit()
        assert int(pair["rejected"]) >= 0


def test_plausible_wrong_answers_are_plausible():
    import random

    task = ArithmeticTask()
    p = task.make_problem(37, "+", 48)
    seen = {plausible_wrong_answer(p, random.Random(i)) for i in range(200)}
    assert "85" not in seen
    assert {"84", "86", "75", "58"} <= seen  # off by one, carry dropped, digits swapped
    zero = task.make_problem(0, "+", 0)
    assert plausible_wrong_answer(zero, random.Random(0)) not in ("0", "-1")


def test_rl_prompts():
    task = ArithmeticTask(seed=6, **SMALL)
    prompts = task.rl_prompts("heldout")
    assert len(prompts) == task.heldout_size
    for r, p in zip(prompts, task.problems("heldout")):
        assert r == {"messages": [{"role": "user", "content": p.question}], "answer": p.answer}
