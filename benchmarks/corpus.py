"""A generated pretraining corpus of any size: jsonl shards of prose documents (`{"text": ...}`).

Documents are drawn from a pool of seeded paragraphs (rlsys/curation/prose.py), so gigabytes are written in
seconds and the text still has structure a model can learn. Also a tiny model whose tokenizer knows that prose.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from rlsys.curation.prose import Prose


def paragraphs(seed: int, count: int) -> list[str]:
    prose = Prose(random.Random(seed))
    return [prose.paragraph(prose.topic(), prose.rng.randint(3, 6)) for _ in range(count)]


def write_corpus(folder: Path, total_mb: float, shards: int = 8, seed: int = 0, pool: int = 20000) -> Path:
    """`shards` files of about total_mb / shards MB each (kept if already there at that size)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = int(total_mb * 2**20 / shards)
    pool_texts, rng = paragraphs(seed, pool), random.Random(seed)
    for shard in range(shards):
        path = folder / f"part-{shard:05d}.jsonl"
        if path.exists() and path.stat().st_size >= target:
            continue
        lines, written = [], 0
        with open(path, "w") as handle:
            while written < target:
                text = "\n\n".join(rng.choices(pool_texts, k=rng.randint(2, 5)))
                line = json.dumps({"text": text}) + "\n"
                lines.append(line)
                written += len(line)
                if len(lines) >= 2000:
                    handle.write("".join(lines))
                    lines = []
            handle.write("".join(lines))
    return folder


def prose_model(folder: Path, *, hidden_size: int = 256, num_layers: int = 4, vocab_size: int = 2048) -> Path:
    """A randomly initialised model whose tokenizer was trained on the corpus's prose."""
    from rlsys.models.tiny import build_tiny_model

    if not (folder / "config.json").exists():
        build_tiny_model(folder, hidden_size=hidden_size, num_layers=num_layers, num_heads=hidden_size // 64,
                         intermediate_size=4 * hidden_size, texts=paragraphs(1, 3000), vocab_size=vocab_size,
                         max_position_embeddings=1024)
    return folder
