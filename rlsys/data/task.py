"""The embedded arithmetic task: a seeded, deterministic generator of "What is 37 + 48?" problems.

One :class:`ArithmeticTask` gives every stage its data from the same pool of problems:
plain-text documents for pretraining, chat conversations for SFT, preference pairs for
reward-model/DPO training and prompts with reference answers for RL. A fixed
``heldout`` split (``heldout_size`` problems) is set aside first and never appears in any
``train`` split, so held-out accuracy measures generalisation, not memorisation.

Pure Python (no torch); the same ``seed`` and knobs always give the same data.

The presets in ``configs/`` (pretrain, sft, grpo) were calibrated on it: held-out accuracy after
pretraining + SFT depends on the seed, because addition is learned in a jump that may or may not come
within the budget; GRPO lifts most where SFT left a fair share right.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from rlsys.config.choices import OPERATIONS

SPLITS = ("train", "heldout")
# Spaces up to this size are enumerated in full; larger ones are sampled.
_ENUMERATE_LIMIT = 250_000


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int
    question: str
    answer: str  # the bare number string, e.g. "85"

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.a, self.op, self.b)


def _evaluate(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"Unknown operation {op!r}; allowed operations: {', '.join(OPERATIONS)}")


@dataclass(frozen=True)
class ArithmeticTask:
    """Seeded arithmetic problems ``a op b`` with ``min_operand <= a, b <= max_operand``.

    Difficulty knobs: the operand range and the operations. With ``allow_negative=False``
    subtraction problems only have ``a >= b`` (answers are never negative).
    ``train_size`` caps the train split (``None``: every problem not held out, for spaces
    small enough to enumerate; 100k otherwise).
    """

    seed: int = 0
    heldout_size: int = 500  # problems reserved for evaluation, never in any train split
    min_operand: int = 0
    max_operand: int = 99
    operations: tuple[str, ...] = ("+",)
    allow_negative: bool = False
    train_size: int | None = None
    question_template: str = "What is {a} {op} {b}?"
    multi_turn_fraction: float = 0.2  # share of SFT conversations with 2-3 Q/A turns
    lines_per_document: int = 16  # Q/A lines per pretraining document
    pretrain_chat_fraction: float = 0.5  # share of pretraining documents written as ChatML transcripts
    pretrain_repeats: int = 1  # passes over the split's problems in pretrain_texts

    def __post_init__(self) -> None:
        if not self.operations:
            raise ValueError("operations must not be empty")
        for op in self.operations:
            if op not in OPERATIONS:
                raise ValueError(f"Unknown operation {op!r}; allowed operations: {', '.join(OPERATIONS)}")
        if self.min_operand < 0 or self.max_operand < self.min_operand:
            raise ValueError(f"need 0 <= min_operand <= max_operand, got {self.min_operand}..{self.max_operand}")
        if self.heldout_size < 0:
            raise ValueError(f"heldout_size must be >= 0, got {self.heldout_size}")
        if not 0.0 <= self.multi_turn_fraction <= 1.0:
            raise ValueError(f"multi_turn_fraction must be in [0, 1], got {self.multi_turn_fraction}")
        if not 0.0 <= self.pretrain_chat_fraction <= 1.0:
            raise ValueError(f"pretrain_chat_fraction must be in [0, 1], got {self.pretrain_chat_fraction}")
        if self.lines_per_document < 1 or self.pretrain_repeats < 1:
            raise ValueError("lines_per_document and pretrain_repeats must be >= 1")
        if self.heldout_size >= self.space_size:
            raise ValueError(f"heldout_size {self.heldout_size} leaves no train problems (space has {self.space_size})")

    # ------------------------------------------------------------------ problems
    @property
    def space_size(self) -> int:
        """Number of distinct problems the knobs allow."""
        n = self.max_operand - self.min_operand + 1
        total = 0
        for op in self.operations:
            total += n * (n + 1) // 2 if (op == "-" and not self.allow_negative) else n * n
        return total

    def make_problem(self, a: int, op: str, b: int) -> Problem:
        question = self.question_template.format(a=a, op=op, b=b)
        return Problem(a=a, op=op, b=b, question=question, answer=str(_evaluate(a, op, b)))

    def problems(self, split: str) -> list[Problem]:
        """The problems of ``split`` ("train" or "heldout"), in a fixed seeded order."""
        heldout, train = _split_keys(self)
        keys = heldout if _check_split(split) == "heldout" else train
        return [self.make_problem(*key) for key in keys]

    def _rng(self, purpose: str, split: str) -> random.Random:
        return random.Random(f"rlsys-arithmetic/{self.seed}/{purpose}/{split}")

    # ------------------------------------------------------------------ stage views
    def pretrain_texts(self, split: str) -> list[str]:
        """Text documents of ``lines_per_document`` problems each, every problem of the split once
        per ``pretrain_repeats``.

        A document is either plain lines "What is 37 + 48? 85" or, for a
        ``pretrain_chat_fraction`` share of documents, the same problems as a ChatML
        transcript (``<|im_start|>user\nWhat is 37 + 48?<|im_end|>\n<|im_start|>assistant\n85<|im_end|>\n``),
        the format chat prompts use later; without it the SFT stage has to relearn the task
        in the new format.
        """
        problems = self.problems(split)
        rng = self._rng("pretrain", split)
        order: list[Problem] = []
        for _ in range(self.pretrain_repeats):
            shuffled = list(problems)
            rng.shuffle(shuffled)
            order.extend(shuffled)
        k = self.lines_per_document
        docs = []
        for i in range(0, len(order), k):
            chunk = order[i : i + k]
            if rng.random() < self.pretrain_chat_fraction:
                docs.append(
                    "".join(
                        f"<|im_start|>user\n{p.question}<|im_end|>\n<|im_start|>assistant\n{p.answer}<|im_end|>\n"
                        for p in chunk
                    )
                )
            else:
                docs.append("\n".join(f"{p.question} {p.answer}" for p in chunk))
        return docs

    def sft_conversations(self, split: str) -> list[dict]:
        """Chat conversations; each problem of the split is used once.

        About ``multi_turn_fraction`` of the conversations hold 2-3 user/assistant turns.
        """
        problems = self.problems(split)
        rng = self._rng("sft", split)
        order = list(problems)
        rng.shuffle(order)
        conversations: list[dict] = []
        i = 0
        while i < len(order):
            turns = rng.choice((2, 3)) if rng.random() < self.multi_turn_fraction else 1
            messages: list[dict] = []
            for p in order[i : i + turns]:
                messages.append({"role": "user", "content": p.question})
                messages.append({"role": "assistant", "content": p.answer})
            conversations.append({"messages": messages})
            i += turns
        return conversations

    def preference_pairs(self, split: str, per_problem: int = 1, near_misses: bool = False) -> list[dict]:
        """The right answer (chosen) against plausible wrong ones: ``per_problem`` pairs with distinct rejects,
        and with ``near_misses`` also against every near miss (off by one, carry dropped) not among them."""
        rng = self._rng("preference", split)
        pairs = []
        for p in self.problems(split):
            rejects = plausible_wrong_answers(p, rng, per_problem)
            rejects += [m for m in _near_misses(p) if near_misses and m not in rejects]
            for rejected in rejects:
                pairs.append({"prompt": [{"role": "user", "content": p.question}], "chosen": p.answer,
                              "rejected": rejected})
        return pairs

    def near_miss_pairs(self, split: str) -> list[dict]:
        """The right answer against the closest wrong ones: off by one either way, and the carry dropped."""
        return [{"prompt": [{"role": "user", "content": p.question}], "chosen": p.answer, "rejected": rejected}
                for p in self.problems(split) for rejected in _near_misses(p)]

    def rl_prompts(self, split: str) -> list[dict]:
        """Prompts with reference answers for rule-rewarded RL (exact match on the number)."""
        return [
            {"messages": [{"role": "user", "content": p.question}], "answer": p.answer}
            for p in self.problems(split)
        ]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; allowed splits: {', '.join(SPLITS)}")
    return split


def _draw(task: ArithmeticTask, rng: random.Random) -> tuple[int, str, int]:
    op = rng.choice(task.operations)
    a = rng.randint(task.min_operand, task.max_operand)
    b = rng.randint(task.min_operand, task.max_operand)
    if op == "-" and not task.allow_negative and a < b:
        a, b = b, a
    return (a, op, b)


@functools.lru_cache(maxsize=16)
def _split_keys(task: ArithmeticTask) -> tuple[tuple, tuple]:
    """(heldout keys, train keys): disjoint by construction."""
    rng = random.Random(f"rlsys-arithmetic/{task.seed}/split")
    ops = task.operations
    if task.space_size <= _ENUMERATE_LIMIT:
        r = range(task.min_operand, task.max_operand + 1)
        keys = [
            (a, op, b)
            for op in ops
            for a in r
            for b in r
            if not (op == "-" and not task.allow_negative and a < b)
        ]
        rng.shuffle(keys)
        heldout, train = keys[: task.heldout_size], keys[task.heldout_size :]
        if task.train_size is not None:
            train = train[: task.train_size]
    else:
        want = task.heldout_size + (task.train_size if task.train_size is not None else 100_000)
        want = min(want, task.space_size)
        seen: set = set()
        keys = []
        while len(keys) < want:
            key = _draw(task, rng)
            if key not in seen:
                seen.add(key)
                keys.append(key)
        heldout, train = keys[: task.heldout_size], keys[task.heldout_size :]
    return tuple(heldout), tuple(train)


def _no_carry(a: int, op: str, b: int) -> int | None:
    """Digit-wise result with carries (or borrows) dropped: 37 + 48 -> 75, 52 - 38 -> 26."""
    if op not in ("+", "-") or a < 0 or b < 0:
        return None
    out, place = 0, 1
    while a or b:
        da, db = a % 10, b % 10
        digit = (da + db) % 10 if op == "+" else abs(da - db)
        out += digit * place
        a, b, place = a // 10, b // 10, place * 10
    return out


def _near_misses(problem: Problem) -> list[str]:
    """The wrong answers closest to right: off by one either way, and the carry dropped."""
    value = int(problem.answer)
    misses = {value + 1, value - 1, _no_carry(problem.a, problem.op, problem.b)} - {value, None}
    return [str(m) for m in sorted(misses) if m >= 0 or value < 0]


def plausible_wrong_answer(problem: Problem, rng: random.Random) -> str:
    """A wrong answer a weak model might give: off by one, carry dropped, digits swapped, tens off."""
    return plausible_wrong_answers(problem, rng, 1)[0]


def plausible_wrong_answers(problem: Problem, rng: random.Random, count: int) -> list[str]:
    """Up to ``count`` distinct wrong answers, the likelier mistakes (dropped carry, swapped digits) first."""
    value = int(problem.answer)
    candidates: list[int] = [value + 1, value - 1, value + 10, value - 10]
    dropped = _no_carry(problem.a, problem.op, problem.b)
    if dropped is not None:
        candidates += [dropped] * 2
    digits = str(abs(value))
    if len(digits) >= 2:
        swapped = digits[:-2] + digits[-1] + digits[-2]
        candidates += [int(swapped) * (1 if value >= 0 else -1)] * 2
    if problem.op == "*":
        candidates += [value + problem.a, value - problem.a]
    valid = [c for c in candidates if c != value and (c >= 0 or value < 0)]
    if not valid:  # e.g. answer 0 with nothing non-negative but +1
        valid = [value + 1]
    picked: list[int] = []
    while valid and len(picked) < count:
        choice = rng.choice(valid)
        picked.append(choice)
        valid = [c for c in valid if c != choice]
    return [str(c) for c in picked]


def tokenizer_texts(seed: int = 0, n: int = 2000) -> list[str]:
    """What a tiny model's tokenizer learns from (`rlsys.models.tiny`): a sample of the embedded task's text, plain
    Q/A lines and ChatML conversations."""
    from rlsys.models.tiny import render_chatml

    task = ArithmeticTask(seed=seed)
    rng = random.Random(f"rlsys-tiny-tokenizer/{seed}")
    docs = task.pretrain_texts("train")
    convs = task.sft_conversations("train")
    texts = rng.sample(docs, min(n, len(docs)))
    texts += [render_chatml(c["messages"]) for c in rng.sample(convs, min(n, len(convs)))]
    # A little of the other operations so their symbols are in the vocabulary whatever the task.
    texts += [f"What is {rng.randint(0, 999)} {op} {rng.randint(0, 999)}?" for op in "+-*" for _ in range(50)]
    return texts
