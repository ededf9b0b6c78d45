"""`env=calculator`: arithmetic too hard to do in the head (2-digit multiplication for the tiny model) and a
calculator tool. The job's reward terms (answer_match on the `answer` column) score the final answer;
`env.kwargs.call_reward` adds a per-turn reward for the first call whose result is the row's answer.

The same problems give SFT demonstrations of the tool (`demonstration`): the question, a call with the
question's expression, the tool's result and the answer, so `rlsys sft env=calculator` teaches the format.
"""
from __future__ import annotations

import ast
import operator
import re

from rlsys.envs.tools import ToolEnvironment

OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
EXPRESSION = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)")


def evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return -evaluate(node.operand) if isinstance(node.op, ast.USub) else evaluate(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = evaluate(node.left), evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return OPERATORS[type(node.op)](left, right)
    raise ValueError(f"unsupported syntax {ast.dump(node)[:40]}")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: numbers and + - * / ( ), as in the question
    """
    value = evaluate(ast.parse(expression.strip(), mode="eval").body)
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def tool_call(name: str, **arguments) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


class CalculatorEnv(ToolEnvironment):
    functions = [calculator]

    def __init__(self, call_reward: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.call_reward, self.rewarded = call_reward, False

    def step(self, message: dict):
        result = super().step(message)
        right = any(m["content"] == str(self.row.get("answer")) for m in result.observations)
        if right and not self.rewarded:  # progress the final answer still has to use
            self.rewarded, result.reward = True, result.reward + self.call_reward
        return result

    @staticmethod
    def demonstration(row: dict) -> list[dict]:
        """The conversation that solves the row with one call: what tool SFT trains on."""
        question = row["messages"][-1]["content"]
        found = EXPRESSION.search(question)
        if found is None:
            raise ValueError(f"no arithmetic expression in {question!r}")
        expression = " ".join(found.groups())
        return [*row["messages"],
                {"role": "assistant", "content": "", "tool_calls": [tool_call("calculator", expression=expression)]},
                {"role": "tool", "content": calculator(expression)},
                {"role": "assistant", "content": str(row["answer"])}]
