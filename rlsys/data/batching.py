"""Which examples a step trains on: a pure function of (step, seed), so a resumed run sees exactly what it would
have seen. Each epoch is a new shuffle; the examples left over after the last full batch wait for the next one."""
from __future__ import annotations

import random

from rlsys.errors import DataError


def require_batch(count: int, batch_size: int, what: str, setting: str = "trainer.batch_size") -> None:
    """A batch holds distinct examples (repeating one inside a batch would weigh it twice), so data smaller than
    one batch is refused before anything starts, with the two ways out."""
    if count < batch_size:
        raise DataError(f"{count} {what} are fewer than the {batch_size} each step draws ({setting}). Lower "
                        f"{setting} to at most {count}, or train on more rows.")


def batch_indices(count: int, step: int, batch_size: int, seed: int) -> list[int]:
    """The indices, among `count` examples, of step `step`'s batch (steps count from 1)."""
    per_epoch = count // batch_size
    epoch, offset = divmod(step - 1, per_epoch)
    order = list(range(count))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return order[offset * batch_size:(offset + 1) * batch_size]


def batch_at(examples: list[dict], step: int, batch_size: int, seed: int) -> dict[str, list]:
    """Step `step`'s batch as columns: {key: [the value of each picked example]}."""
    picked = batch_indices(len(examples), step, batch_size, seed)
    return {key: [examples[i][key] for i in picked] for key in examples[0]}
