"""`env=retry`: the model answers, hears whether it was right, and may try again up to env.max_turns times.
A right answer at turn t earns 1 - penalty * (t - 1): the reward falls with every turn the model needed,
so credit has to reach the first attempt."""
from __future__ import annotations

from rlsys.envs.base import Environment, StepResult
from rlsys.rewards.rules import answer_match


class RetryEnv(Environment):
    def __init__(self, penalty: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        self.penalty = penalty

    def reset(self, row: dict) -> list[dict]:
        self.row, self.turn = row, 0
        return row["messages"]

    def step(self, message: dict) -> StepResult:
        self.turn += 1
        right = answer_match([""], [message["content"]], [self.row["answer"]])[0] == 1.0
        if right:
            return StepResult([], max(0.0, 1.0 - self.penalty * (self.turn - 1)), True, {"correct": True})
        return StepResult([{"role": "user", "content": "That is not right. Try again."}], 0.0, False,
                          {"correct": False})
