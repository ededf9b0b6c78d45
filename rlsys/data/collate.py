"""Token-level preparation: packed pretraining blocks, chat examples with assistant-only labels, padding."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from rlsys.errors import DataError, ModelError

IGNORE = -100


def require_chat_template(tokenizer, where: str = "") -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"the tokenizer{' at ' + where if where else ''} has no chat template, which chat data "
                         "needs. Use a chat model's tokenizer, or set tokenizer.chat_template in its "
                         "tokenizer_config.json.")


def pack_texts(token_lists: Iterable[Sequence[int]], block_size: int, eos_id: int) -> list[list[int]]:
    """Concatenate documents (each ended by EOS) and cut the stream into full blocks; the remainder is dropped."""
    stream: list[int] = []
    blocks: list[list[int]] = []
    for tokens in token_lists:
        stream.extend(tokens)
        stream.append(eos_id)
        while len(stream) >= block_size:
            blocks.append(stream[:block_size])
            stream = stream[block_size:]
    return blocks


def render_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False,
               tools: list[dict] | None = None) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_chat(tokenizer, messages: list[dict], max_length: int,
                tools: list[dict] | None = None) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and labels that keep only the assistant turns' tokens.

    Each assistant turn's span is found by rendering the conversation up to it (with the generation
    prompt) and up to its end: the tokens in between are the turn's, end-of-turn token included. This
    works for any template whose renderings are prefixes of each other (ChatML, Llama 3, ...). `tools` are the
    tool schemas the template shows (tool-use demonstrations).
    """
    input_ids = render_ids(tokenizer, messages, tools=tools)
    labels = [IGNORE] * len(input_ids)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_ids(tokenizer, messages[:index], add_generation_prompt=True, tools=tools)
        through = render_ids(tokenizer, messages[: index + 1], tools=tools)
        if input_ids[:len(before)] != before or input_ids[:len(through)] != through:
            raise DataError(
                f"the chat template of {tokenizer.name_or_path or 'the tokenizer'} renders turn {index} differently "
                f"once later turns follow (it rewrites history, e.g. drops the reasoning of earlier assistant "
                f"turns), so the assistant's tokens cannot be found. Train on conversations that end at that turn, "
                f"or use a template whose renderings are prefixes of each other.")
        labels[len(before):len(through)] = input_ids[len(before):len(through)]
    return input_ids[:max_length], labels[:max_length]


def pack_examples(examples: Sequence[tuple[list[int], list[int]]],
                  max_length: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Greedy first-fit packing of (ids, labels) examples into sequences of at most max_length tokens, with
    position ids that restart at every example: attention then stays inside each example."""
    packed: list[tuple[list[int], list[int], list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example_ids, example_labels in examples:
        if ids and len(ids) + len(example_ids) > max_length:
            packed.append((ids, labels, positions))
            ids, labels, positions = [], [], []
        ids = ids + example_ids
        labels = labels + [IGNORE] + example_labels[1:]  # an example's first token is not predicted across
        positions = positions + list(range(len(example_ids)))
    if ids:
        packed.append((ids, labels, positions))
    return packed


def pad(sequences: Sequence[Sequence[int | float]], value: int | float, *, left: bool = False,
        dtype: torch.dtype = torch.long) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), value, dtype=dtype)
    for row, seq in enumerate(sequences):
        if len(seq):
            span = slice(width - len(seq), width) if left else slice(0, len(seq))
            out[row, span] = torch.tensor(seq, dtype=dtype)
    return out
