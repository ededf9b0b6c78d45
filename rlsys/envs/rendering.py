"""Token ids of a multi-turn episode without re-tokenising what the model sampled.

The first prompt is the chat template's rendering of the first messages (with the tools). After that, only
new turns are rendered: an observation's tokens are the difference between a fixed conversation with and
without it, so the model's own tokens stay exactly as sampled and the observation reads exactly as the
template would write it in a whole conversation.
"""
from __future__ import annotations

from rlsys.errors import ModelError

# stand-ins for the conversation so far: the observation's rendering does not depend on them
_BEFORE = [{"role": "user", "content": "?"}, {"role": "assistant", "content": "."}]
_PROBE = [{"role": "user", "content": "?"}]


class TurnRenderer:
    def __init__(self, tokenizer, tools: list[dict], end_of_turn: list[int], model: str = ""):
        self.tokenizer, self.tools, self.end_of_turn = tokenizer, tools or None, end_of_turn
        self.model = model or tokenizer.name_or_path or "the model"
        if tools:
            self.check_tool_support()
        self.close_ids = end_of_turn[:1]  # what ends a turn the model did not end itself
        # the fixed conversation, up to and including the end of its assistant turn
        before, end = self.text(_BEFORE), self.tokenizer.decode(self.close_ids) if self.close_ids else ""
        marker = _BEFORE[-1]["content"] + end
        self.before = before[:before.rfind(marker) + len(marker)] if end and marker in before else None

    def text(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tools=self.tools, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.ids(self.text(messages, add_generation_prompt=True))

    def observation_ids(self, observations: list[dict], model_ended_turn: bool) -> list[int]:
        """The tokens after the model's turn up to the next generation prompt: the end of the assistant turn
        the template writes after its end-of-turn token, the observation messages, the generation prompt."""
        after = self.text(_BEFORE + observations, add_generation_prompt=True)
        if self.before is None or not after.startswith(self.before):
            raise ModelError(f"the chat template of {self.model} renders earlier turns differently once an "
                             f"observation follows, so new turns cannot be appended token-exactly; use a template "
                             f"whose renderings are prefixes of each other (ChatML, Qwen2.5, Llama 3)")
        return ([] if model_ended_turn else list(self.close_ids)) + self.ids(after[len(self.before):])

    def check_tool_support(self) -> None:
        """A template that ignores tools= would hide them from the model: stop before anything starts."""
        try:
            with_tools = self.text(_PROBE)
            self.text(_PROBE + [{"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
                {"role": "tool", "content": "1"}])
        except Exception as err:
            raise ModelError(f"the chat template of {self.model} cannot render tool calls or results "
                             f"({type(err).__name__}: {err}); use a tokenizer whose template supports tools= "
                             f"(Qwen2.5, Llama 3.1, Hermes) or an environment without tools") from err
        plain = self.tokenizer.apply_chat_template(_PROBE, tokenize=False)
        name = self.tools[0].get("function", self.tools[0]).get("name", "")
        if with_tools == plain or (name and name not in with_tools):
            raise ModelError(f"the chat template of {self.model} does not render tools= (the environment's tool "
                             f"schemas), so the model would never see them; use a tokenizer whose template "
                             f"supports tools (Qwen2.5, Llama 3.1, Hermes) or an environment without tools")
