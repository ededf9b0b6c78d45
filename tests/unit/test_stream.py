"""Streaming data without Ray: pieces cover every row once, encoding is exact and deterministic, mixtures keep
their weights, and bad sources and settings are one clear error before anything starts."""
import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlsys.config.compose import compose_job
from rlsys.config.jobs import streams
from rlsys.config.validate import to_typed
from rlsys.data.collate import pack_texts
from rlsys.data.encode import encode_pieces
from rlsys.data.pieces import Piece, plan_pieces, read_piece
from rlsys.data.stream import furthest_below_weight
from rlsys.data.stream_plan import stream_plan
from rlsys.errors import ConfigError, DataError

COLUMNS = {"text": "text"}


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rng.randint(1, 40)))
            for _ in range(count)]


@pytest.mark.parametrize("piece_bytes", [1, 7, 100, 1000, 10**6])
def test_jsonl_byte_ranges_hold_every_line_once(tmp_path, piece_bytes):
    rows = [{"text": t} for t in texts(300)]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + ("\n\n" if i % 17 == 0 else "\n") for i, r in enumerate(rows)))
    pieces = plan_pieces(str(path), piece_bytes)
    read = [row for piece in pieces for row in read_piece(piece, COLUMNS)]
    assert read == rows
    size = path.stat().st_size
    assert len(pieces) == min(size, math.ceil(size / piece_bytes))


def test_folders_parquet_row_groups_and_column_mapping(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_jsonl(folder / "part-0.jsonl", [{"body": "one"}, {"body": "two"}])
    pq.write_table(pa.table({"body": ["three", "four", "five"]}), folder / "part-1.parquet", row_group_size=2)
    pieces = plan_pieces(str(folder), 1 << 20)
    assert [p.kind for p in pieces] == ["jsonl", "parquet", "parquet"]
    read = [r for p in pieces for r in read_piece(p, {"text": "body"})]
    assert [r["text"] for r in read] == [r["body"] for r in read] == ["one", "two", "three", "four", "five"]


def test_fewer_pieces_than_ranks_are_striped(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts(10)])
    pieces = plan_pieces(path, 1 << 20, ranks=3)
    assert [(p.stripe, p.stripes) for p in pieces] == [(0, 3), (1, 3), (2, 3)]


def test_malformed_line_names_its_byte_offset_or_is_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "good"}\n{"text": broken\n{"text": "also good"}\n')
    piece = plan_pieces(str(path), 1 << 20)[0]
    with pytest.raises(DataError, match=r"the line at byte 17 of .*a.jsonl is not a valid JSON object.*on_error=skip"):
        list(read_piece(piece, COLUMNS))
    assert [r["text"] for r in read_piece(piece, COLUMNS, on_error="skip")] == ["good", "also good"]


def encode(piece: Piece, tokenizer_path: str, mode: str = "text", block: int = 32, epoch: int = 0, **kwargs):
    rows = {k: np.array([v]) for k, v in piece.as_row().items()}
    return encode_pieces({**rows, "index": np.array([0]), "epoch": np.array([epoch])}, mode=mode,
                         tokenizer_path=tokenizer_path, block_tokens=block, columns=kwargs.pop("columns", COLUMNS),
                         on_error="fail", seed=0, source=0, **kwargs)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), texts=tokenizer_texts()))


def test_text_blocks_are_the_packed_documents_shuffled_by_epoch(tmp_path, tokenizer_dir):
    from rlsys.models.builders import load_tokenizer

    docs = texts(200)
    piece = plan_pieces(write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in docs]), 1 << 20)[0]
    tokenizer = load_tokenizer(tokenizer_dir)
    expected = pack_texts(tokenizer(docs, add_special_tokens=False)["input_ids"], 32, tokenizer.eos_token_id)
    first, again, next_epoch = encode(piece, tokenizer_dir), encode(piece, tokenizer_dir), \
        encode(piece, tokenizer_dir, epoch=1)
    assert first["input_ids"].shape == (len(expected), 32) and set(first["length"]) == {32}
    assert sorted(map(tuple, first["input_ids"].tolist())) == sorted(map(tuple, expected))
    assert np.array_equal(first["input_ids"], again["input_ids"])  # deterministic
    assert not np.array_equal(first["input_ids"], next_epoch["input_ids"])  # reshuffled


def test_chat_sequences_are_packed_with_assistant_labels(tmp_path, tokenizer_dir):
    rows = [{"prompt": f"What is {a} + {a}?", "response": str(2 * a)} for a in range(40)]
    piece = plan_pieces(write_jsonl(tmp_path / "chat.jsonl", rows), 1 << 20)[0]
    out = encode(piece, tokenizer_dir, mode="chat", block=128, columns={"prompt": "prompt", "response": "response"})
    lengths = out["length"].tolist()
    assert all(n <= 128 for n in lengths) and len(lengths) < 40  # several conversations per sequence
    labelled = sum(int((row[:n] != -100).sum()) for row, n in zip(out["labels"], lengths))
    assert 0 < labelled < sum(lengths)
    assert any(0 in row[1:n] for row, n in zip(out["position_ids"].tolist(), lengths))  # positions restart


def test_mixture_keeps_token_shares_within_one_sequence():
    weights, taken = [0.7, 0.2, 0.1], [0, 0, 0]
    for step in range(1, 2001):
        source = furthest_below_weight(weights, taken, [True, True, True])
        taken[source] += random.Random(step).randint(50, 128)  # sequences of uneven length (SFT)
        shares = [t / sum(taken) for t in taken]
        if step > 100:
            assert all(abs(s - w) <= 128 / sum(taken) + 1e-9 for s, w in zip(shares, weights))
    assert furthest_below_weight(weights, taken, [False, True, False]) == 1
    assert furthest_below_weight(weights, taken, [False, False, False]) is None


def job(*overrides: str):
    return to_typed(compose_job("pretrain", list(overrides)))


def test_plan_names_weights_and_pieces(tmp_path, tokenizer_dir):
    a = write_jsonl(tmp_path / "web.jsonl", [{"text": t} for t in texts(50)])
    b = write_jsonl(tmp_path / "code.jsonl", [{"body": t} for t in texts(50, 1)])
    cfg = job(f"output_dir={tmp_path}", f"data.mixture=[{{path: {a}, weight: 3}}, {{path: {b}, weight: 1, "
              "name: code, columns: {text: body}}]")
    assert streams(cfg)
    plan = stream_plan(cfg, tokenizer_dir)
    assert [(s.name, s.weight) for s in plan.sources] == [("web", 0.75), ("code", 0.25)]
    assert plan.mode == "text" and all(s.pieces for s in plan.sources)
    assert not streams(job(f"data.train={a}")), "small files are read whole unless data.streaming=true"
    assert streams(job(f"data.train={a}", "data.streaming=true"))


@pytest.mark.parametrize("overrides, message", [
    (["data.mixture=[{path: X, weight: 0}]"], r"data.mixture\[0\].weight must be positive"),
    (["data.mixture=[{weight: 1}]"], r"data.mixture\[0\] needs a path"),
    (["data.mixture=[{path: X}]", "data.train=Y"], "set data.mixture or data.train, not both"),
    (["data.streaming=sometimes"], "config key 'data.streaming' is 'sometimes'; allowed: auto, true, false"),
    (["data.mixture=[{path: X, epochs: 0}]"], r"epochs must be at least 1"),
])
def test_bad_streaming_settings_stop_before_start(overrides, message):
    with pytest.raises(ConfigError, match=message):
        job(*overrides)


def test_bad_sources_are_named_before_actors_start(tmp_path, tokenizer_dir):
    good = write_jsonl(tmp_path / "good.jsonl", [{"text": "hello"}])
    other = write_jsonl(tmp_path / "other.jsonl", [{"body": "hello"}])
    cases = [
        ([f"data.mixture=[{{path: {tmp_path / 'missing'}}}]"], "does not exist"),
        ([f"data.mixture=[{{path: {other}}}]"], r"no 'text' column \(columns: body\).*data.columns.text="),
        ([f"data.mixture=[{{path: {good}}}, {{path: {good}}}]"], "two sources are named 'good'"),
        ([f"data.mixture=[{{path: {good}, name: 'a b'}}]"], "goes into metric names"),
        ([f"data.train={good}", "data.streaming=true", "cluster.policy.num_ranks=3"], "multiple of num_ranks"),
    ]
    for overrides, message in cases:
        with pytest.raises(DataError, match=message):
            stream_plan(job(f"output_dir={tmp_path}", *overrides), tokenizer_dir)


def test_hf_sources_are_cut_into_their_shards(tmp_path):
    """hf:NAME goes through `datasets` streaming; a local folder stands in for a hub dataset here."""
    folder = tmp_path / "dataset"
    folder.mkdir()
    for shard in range(3):
        write_jsonl(folder / f"train-{shard}.jsonl", [{"text": f"doc {shard}-{i}"} for i in range(4)])
    pieces = plan_pieces(f"hf:{folder}", 1 << 20)
    assert [(p.kind, p.start, p.end) for p in pieces] == [("hf", 0, 3), ("hf", 1, 3), ("hf", 2, 3)]
    read = sorted(r["text"] for p in pieces for r in read_piece(p, COLUMNS))
    assert read == sorted(f"doc {s}-{i}" for s in range(3) for i in range(4))
