"""A rank's own stream of training sequences: its share of every source's pieces, tokenised ahead of use by
Ray Data tasks, mixed by weight, at a position that checkpoints record and resumed runs continue from exactly.

    pieces     epoch e of a source lists its pieces in an order shuffled by (seed, source, e); rank r reads
               every world-th of them, so no two ranks read the same data and none waits for another
    mixture    the next sequence comes from the source furthest below its weight in tokens taken, so the
               realised shares stay within one sequence of the weights, on every rank and in total
    position   per source: epoch, the piece being read, sequences taken from it, tokens taken in all
Memory stays flat: each source holds the piece it reads and Ray Data's few prefetched ones, whatever the
dataset's size; the driver only ever sees the plan (file names and byte ranges).
"""
from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass, field
from typing import Iterator

from rlsys.data.encode import FIELDS, encode_pieces
from rlsys.data.pieces import Piece
from rlsys.errors import DataError, DataExhausted


@dataclass
class SourcePlan:
    name: str
    weight: float  # the source's share of tokens (weights sum to one)
    pieces: list[Piece]
    columns: dict[str, str]
    epochs: int | None = None  # None: read again as often as the run needs


@dataclass
class StreamPlan:
    mode: str  # text (pretraining blocks) | chat (packed SFT conversations)
    sources: list[SourcePlan]
    tokenizer_path: str
    block_tokens: int
    seed: int = 0
    on_error: str = "fail"
    tools: list[dict] | None = None
    workers: int = 1  # tokenising tasks in flight per source and rank
    cpus_per_worker: float = 0.5
    prefetch: int = 1  # pieces tokenised ahead of the one being read
    piece_bytes: int = 2**20
    trace_dir: str | None = None  # ranks write a checksum of every sequence they train on here

    def cpus_per_rank(self) -> float:
        """Logical CPUs a rank's tokenising tasks ask Ray for (a local cluster is sized to include them)."""
        return len(self.sources) * self.workers * self.cpus_per_worker


@dataclass
class SourcePosition:
    epoch: int = 0
    piece: int = 0  # index in the rank's pieces of this epoch
    taken: int = 0  # sequences taken from that piece
    tokens: int = 0  # tokens taken from the source in all


def configure_ray_data(plan: StreamPlan) -> None:
    """Results in piece order (that is what makes positions exact), no more pieces tokenised ahead than the
    plan asks for (Ray Data would otherwise fill the object store), no progress bars, a bad row's DataError as
    it is."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    limits = context.execution_options.resource_limits
    context.execution_options.resource_limits = limits.copy(object_store_memory=ahead_bytes(plan))
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    context.raise_original_map_exception = True
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def ahead_bytes(plan: StreamPlan) -> int:
    """Object-store room for the pieces being tokenised and those waiting: their int32 tokens (about 1.6 bytes a
    byte of text in blocks; chat also has labels and positions, and json and parquet pieces can be larger)."""
    per_piece = plan.piece_bytes * (2 if plan.mode == "text" else 6)
    return max(64 * 2**20, (plan.workers + plan.prefetch) * per_piece)


class SourceStream:
    """One source's sequences for one rank, in order, from its position on."""

    def __init__(self, plan: StreamPlan, index: int, rank: int, world: int, position: SourcePosition):
        self.plan, self.index, self.rank, self.world = plan, index, rank, world
        self.source = plan.sources[index]
        self.position = position
        self._rows: Iterator[dict] | None = None

    def rank_pieces(self, epoch: int) -> list[Piece]:
        order = list(range(len(self.source.pieces)))
        random.Random(f"{self.plan.seed}/{self.index}/{epoch}").shuffle(order)
        return [self.source.pieces[i] for i in order[self.rank::self.world]]

    @property
    def finished(self) -> bool:
        return self.source.epochs is not None and self.position.epoch >= self.source.epochs

    def next(self) -> dict[str, list[int]] | None:
        """The next sequence, or None once the source has finished its epochs."""
        while not self.finished:
            if self._rows is None:
                self._rows = self._epoch_rows()
            row = next(self._rows, None)
            if row is not None:
                index = row.pop("index")
                if index != self.position.piece:
                    self.position.piece, self.position.taken = index, 0
                self.position.taken += 1
                self.position.tokens += len(row["input_ids"])
                return row
            self._rows = None
            self.position = SourcePosition(epoch=self.position.epoch + 1, tokens=self.position.tokens)
        return None

    def _epoch_rows(self) -> Iterator[dict]:
        """The rest of the epoch: the pipeline starts at the position's piece and skips what was taken of it."""
        import ray.data

        p, plan = self.position, self.plan
        pieces = self.rank_pieces(p.epoch)[p.piece:]
        from_start = p.piece == 0 and p.taken == 0
        if not pieces:
            return iter(())
        items = [{**piece.as_row(), "index": p.piece + i, "epoch": p.epoch} for i, piece in enumerate(pieces)]
        configure_ray_data(plan)
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            encode_pieces, batch_size=1, num_cpus=plan.cpus_per_worker,
            compute=ray.data.TaskPoolStrategy(size=max(1, plan.workers)),
            fn_kwargs=dict(mode=plan.mode, tokenizer_path=plan.tokenizer_path, block_tokens=plan.block_tokens,
                           columns=self.source.columns, on_error=plan.on_error, seed=plan.seed, source=self.index,
                           tools=plan.tools))
        return self._rows_of(dataset.iter_batches(batch_size=None, batch_format="numpy",
                                                  prefetch_batches=max(1, plan.prefetch)),
                             skip_piece=p.piece, skip=p.taken, from_start=from_start)

    def _rows_of(self, batches, skip_piece: int, skip: int, from_start: bool) -> Iterator[dict]:
        fields = FIELDS[self.plan.mode]
        any_rows = False
        for batch in batches:
            for i in range(len(batch["index"])):
                index, length = int(batch["index"][i]), int(batch["length"][i])
                if index == skip_piece and skip:
                    skip -= 1
                    continue
                any_rows = True
                yield {"index": index, **{k: batch[k][i][:length].tolist() for k in fields}}
        if from_start and not any_rows:
            raise DataError(f"data source '{self.source.name}' gives rank {self.rank} no sequence of "
                            f"data.max_length={self.plan.block_tokens} tokens in a whole epoch: it holds too little "
                            "text for the ranks that share it. Lower data.max_length or cluster.policy.num_ranks, "
                            "or add data.")


def furthest_below_weight(weights: list[float], taken: list[int], live: list[bool]) -> int | None:
    """The live source whose tokens lag its share of all tokens taken the most (the first of equals); weights are
    renormalised over the live sources."""
    total, share = sum(taken), sum(w for w, ok in zip(weights, live) if ok)
    lags = [(w / share * total - t, -i) for i, (w, t, ok) in enumerate(zip(weights, taken, live)) if ok]
    return -max(lags)[1] if lags else None


@dataclass
class RankStream:
    """A rank's mixture of its source streams."""
    plan: StreamPlan
    rank: int
    world: int
    positions: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        self.sources = [SourceStream(self.plan, i, self.rank, self.world,
                                     SourcePosition(**self.positions.get(s.name, {})))
                        for i, s in enumerate(self.plan.sources)]

    def take(self, count: int) -> tuple[dict[str, list], dict[str, int]]:
        """`count` sequences as a batch (dict of lists), and the tokens each source gave."""
        rows, tokens = [], {s.name: 0 for s in self.plan.sources}
        while len(rows) < count:
            stream = self._furthest_below_weight()
            if stream is None:
                raise DataExhausted(f"the data ran out: every source has been read as many times as its epochs "
                                    f"allow ({', '.join(f'{s.name}: {s.epochs}' for s in self.plan.sources)}).")
            row = stream.next()
            if row is None:
                continue
            tokens[stream.source.name] += len(row["input_ids"])
            rows.append(row)
        batch = {k: [r[k] for r in rows] for k in rows[0]}
        if self.plan.mode == "text":
            batch["labels"] = batch["input_ids"]
        return batch, tokens

    def _furthest_below_weight(self) -> SourceStream | None:
        chosen = furthest_below_weight([s.source.weight for s in self.sources],
                                       [s.position.tokens for s in self.sources], [not s.finished for s in self.sources])
        return None if chosen is None else self.sources[chosen]

    def position(self) -> dict[str, dict]:
        return {s.source.name: asdict(s.position) for s in self.sources}
