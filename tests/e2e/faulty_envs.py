"""User environments for the episode tests: ones that work (sync and async) and ones that fail every way."""
import asyncio
import os
import time

from rlsys.envs import Environment, StepResult


class AskTwice(Environment):
    """Says "again" after the first answer, then ends the episode with reward 1 (two turns, always)."""

    def reset(self, row):
        self.turn = 0
        return row["messages"]

    def step(self, message):
        self.turn += 1
        if self.turn == 1:
            return [{"role": "user", "content": "again"}], 0.5, False, {}
        return StepResult([], 1.0, True, {"correct": True})


class AsyncAskTwice(AskTwice):
    async def step(self, message):
        await asyncio.sleep(0.01)
        return super().step(message)


class RaisesOnSeven(AskTwice):
    """Fails in step() on the rows whose answer ends in 7."""

    def step(self, message):
        if str(self.row_answer).endswith("7"):
            raise ValueError("the tool backend is down")
        return super().step(message)

    def reset(self, row):
        self.row_answer = row["answer"]
        return super().reset(row)


class Hangs(AskTwice):
    def step(self, message):
        time.sleep(3600)


class Malformed(AskTwice):
    def step(self, message):
        return "not a step result"


class ResetsToText(AskTwice):
    """Returns the row's question as a string, not a conversation."""

    def reset(self, row):
        return row["messages"][-1]["content"]


class KillsItsProcess(AskTwice):
    def step(self, message):
        os._exit(3)
