"""Tool calls in the Hermes / Qwen2.5 format, and an environment whose turns are tool calls.

The model writes a call as
    <tool_call>
    {"name": "calculator", "arguments": {"expression": "347 * 862"}}
    </tool_call>
and reads the result as a message of role "tool". `ToolEnvironment` answers every call of a turn with the
tool's result (or the error, which the model sees and the run counts); a turn without calls is the final
answer, which `finish` judges.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from rlsys.envs.base import Environment, StepResult

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
UNCLOSED = re.compile(r"<tool_call>(?!.*</tool_call>).*", re.DOTALL)


def parse_assistant(text: str) -> dict:
    """The assistant message a turn's text stands for: content without the calls, the calls parsed, and
    "tool_call_errors" for those that are not {"name": str, "arguments": dict} JSON."""
    calls, errors = [], []
    for raw in TOOL_CALL.findall(text):
        try:
            call = json.loads(raw)
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ValueError('it needs a string "name"')
            arguments = call.get("arguments", {})
            if isinstance(arguments, str):  # OpenAI style: arguments as a JSON string
                arguments = json.loads(arguments)
            if not isinstance(arguments, dict):
                raise ValueError('"arguments" must be an object')
        except ValueError as err:
            errors.append(f"unparsable tool call {raw.strip()[:60]!r}: {err}")
            continue
        calls.append({"type": "function", "function": {"name": call["name"], "arguments": arguments}})
    if UNCLOSED.search(TOOL_CALL.sub("", text)):
        errors.append("a <tool_call> without its closing </tool_call>")
    content = UNCLOSED.sub("", TOOL_CALL.sub("", text)).strip()
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    if errors:
        message["tool_call_errors"] = errors
    return message


class ToolEnvironment(Environment):
    """Tools are plain Python functions with type hints and a Google-style docstring (their JSON schemas are
    read from them); subclasses list them in `functions` and say in `finish` what the final answer earns."""

    functions: list[Callable[..., Any]] = []

    def __init__(self, **kwargs: Any):
        from transformers.utils import get_json_schema

        super().__init__(**kwargs)
        self.by_name = {f.__name__: f for f in self.functions}
        self.tools = [get_json_schema(f) for f in self.functions]
        self.tool_calls = self.tool_errors = 0

    def reset(self, row: dict) -> list[dict]:
        self.row = row
        return row["messages"]

    def step(self, message: dict) -> StepResult:
        calls, errors = message.get("tool_calls", []), list(message.get("tool_call_errors", []))
        if not calls and not errors:
            reward, info = self.finish(message["content"])
            return StepResult([], reward, True, {**info, **self.counts()})
        results = [self.call(c["function"]["name"], c["function"]["arguments"]) for c in calls]
        results += [f"error: {e}" for e in errors]
        self.tool_calls += len(calls) + len(errors)
        self.tool_errors += sum(r.startswith("error:") for r in results)
        return StepResult([{"role": "tool", "content": r} for r in results], 0.0, False, self.counts())

    def counts(self) -> dict:
        return {"tool_calls": self.tool_calls, "tool_errors": self.tool_errors}

    def call(self, name: str, arguments: dict) -> str:
        """A tool's result as text; a wrong name, wrong arguments or a raising tool give "error: ..."."""
        function = self.by_name.get(name)
        if function is None:
            return f"error: no tool named {name!r}; the tools are {', '.join(self.by_name)}"
        try:
            return str(function(**arguments))
        except Exception as err:  # the model's mistake, shown to it: not an environment failure
            return f"error: {type(err).__name__}: {err}"

    def finish(self, answer: str) -> tuple[float, dict]:
        """The final answer's reward and info (default: 0; the job's reward terms score it)."""
        return 0.0, {}
