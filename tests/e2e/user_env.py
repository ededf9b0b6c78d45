"""A user's environment, as the README shows how to write one: loaded with env.path=tests/e2e/user_env.py:LeadingOne."""
from rlsys.envs import Environment, StepResult


class LeadingOne(Environment):
    """Rewards an answer that starts with 1 (about half of the SFT model's do); one hint and a second try,
    worth half, otherwise. Async, as an environment calling a service would be."""

    def reset(self, row):
        self.turn = 0
        return row["messages"]

    async def step(self, message):
        self.turn += 1
        if message["content"].strip().startswith("1"):
            return StepResult(reward=1.0 if self.turn == 1 else 0.5, done=True)
        return StepResult([{"role": "user", "content": "Start your answer with 1."}], 0.0, False)
