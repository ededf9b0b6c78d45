"""Pieces into training sequences, in a Ray Data task: read, tokenise, pack. Pure given the piece and the seed.

    text  (pretraining) documents end with EOS and are cut into blocks of exactly `block_tokens`; a piece's
          remainder under one block is dropped
    chat  (SFT) conversations get assistant-only labels and are packed first-fit into sequences of at most
          `block_tokens`, positions restarting at every conversation (the padding-free path)
The blocks of a piece come back shuffled by (seed, source, epoch, piece), as int32 arrays padded to
`block_tokens` with their lengths, tagged with the piece's index in the rank's epoch order (text blocks carry
`input_ids` only: they are their own labels).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from rlsys.data.collate import IGNORE, encode_chat, pack_examples, pack_texts
from rlsys.data.pieces import Piece, read_piece
from rlsys.data.sources import as_messages
from rlsys.errors import DataError

FIELDS = {"text": ("input_ids",), "chat": ("input_ids", "labels", "position_ids")}


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from rlsys.models.builders import load_tokenizer

    return load_tokenizer(path)


def encode_pieces(batch: dict[str, np.ndarray], *, mode: str, tokenizer_path: str, block_tokens: int,
                  columns: dict[str, str], on_error: str, seed: int, source: int,
                  tools: list[dict] | None = None) -> dict[str, np.ndarray]:
    """Ray Data `map_batches` function: rows describing pieces in, their blocks out."""
    tokenizer = _tokenizer(tokenizer_path)
    fields = FIELDS[mode]
    out: dict[str, list] = {"index": [], "length": [], **{k: [] for k in fields}}
    for row in range(len(batch["index"])):
        piece = Piece(**{k: _scalar(batch[k][row]) for k in Piece.__dataclass_fields__})
        index, epoch = int(batch["index"][row]), int(batch["epoch"][row])
        sequences = (_text_blocks(piece, tokenizer, block_tokens, columns, on_error) if mode == "text"
                     else _chat_sequences(piece, tokenizer, block_tokens, columns, on_error, tools))
        sequences = sequences[piece.stripe::piece.stripes]
        order = np.random.default_rng([seed, source, epoch, index]).permutation(len(sequences))
        for position in order:
            out["index"].append(index)
            out["length"].append(len(sequences[position][0]))
            for key, values in zip(fields, sequences[position]):
                out[key].append(np.pad(np.asarray(values, dtype=np.int32), (0, block_tokens - len(values))))
    empty = np.zeros((0, block_tokens), dtype=np.int32)
    return {"index": np.asarray(out["index"], dtype=np.int64), "length": np.asarray(out["length"], dtype=np.int64),
            **{k: np.stack(out[k]) if out[k] else empty for k in fields}}


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _text_blocks(piece: Piece, tokenizer, block_tokens: int, columns, on_error: str) -> list[tuple]:
    texts = []
    for row in read_piece(piece, columns, on_error):
        text = row.get("text")
        if not isinstance(text, str):
            if on_error == "skip":
                continue
            raise DataError(f"a row of {piece.location} has no 'text' string (its columns: "
                            f"{', '.join(sorted(row)) or 'none'}). Map yours with data.columns.text=YOUR_COLUMN "
                            "(or the mixture source's columns), or set data.on_error=skip.")
        texts.append(text)
    if not texts:
        return []
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    blocks = pack_texts(tokenizer(texts, add_special_tokens=False)["input_ids"], block_tokens, eos)
    return [(block,) for block in blocks]


def _chat_sequences(piece: Piece, tokenizer, block_tokens: int, columns, on_error: str, tools) -> list[tuple]:
    examples = []
    for number, row in enumerate(read_piece(piece, columns, on_error)):
        try:
            messages = as_messages(row, f"row {number} of {piece.location} (piece from byte {piece.start})")
        except DataError:
            if on_error == "skip":
                continue
            raise
        ids, labels = encode_chat(tokenizer, messages, block_tokens, tools)
        if any(label != IGNORE for label in labels):
            examples.append((ids, labels))
    return pack_examples(examples, block_tokens)
