"""Streamed pretraining and SFT on the real stack: each rank reads its own share of the sources through Ray Data,
mixtures keep their weights, a resumed run trains on exactly the sequences an uninterrupted one does, and
`rlsys curate`'s output feeds pretraining."""
import json
import random

import pytest

from rlsys.data.task import ArithmeticTask
from tests.e2e.conftest import run_job
from tests.e2e.test_fault_tolerance import as_crashed_after_step_5

pytestmark = pytest.mark.e2e
WORDS = "river stone light open under quiet market bright north paper winter garden".split()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two sources: the arithmetic task's text, and word salad under another column name."""
    folder = tmp_path_factory.mktemp("sources")
    task = ArithmeticTask(seed=0, heldout_size=100)
    with open(folder / "arith.jsonl", "w") as handle:
        for text in task.pretrain_texts("train"):
            handle.write(json.dumps({"text": text}) + "\n")
    rng = random.Random(0)
    (folder / "words").mkdir()
    for shard in range(3):
        with open(folder / "words" / f"part-{shard}.jsonl", "w") as handle:
            for _ in range(400):
                handle.write(json.dumps({"body": " ".join(rng.choices(WORDS, k=rng.randint(5, 40)))}) + "\n")
    return folder


def mixture(sources, arith: float = 0.7) -> str:
    return (f"data.mixture=[{{path: {sources / 'arith.jsonl'}, weight: {arith}}}, "
            f"{{path: {sources / 'words'}, weight: {1 - arith:.2f}, columns: {{text: body}}}}]")


def pretrain(tiny_model, sources, out, *overrides: str) -> list[dict]:
    return run_job("pretrain", out, f"model.path={tiny_model}", mixture(sources), "data.max_length=64",
                   "trainer.batch_size=8", "data.stream.piece_mb=0.02", "data.stream.trace=true", *overrides)


def traces(out, rank: int) -> dict[int, list[int]]:
    """Step -> checksums of the sequences the rank trained on (the last record of a step wins)."""
    lines = (out / "data_trace" / f"rank{rank}.jsonl").read_text().splitlines()
    return {record["step"]: record["sequences"] for record in map(json.loads, lines)}


@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, tiny_model, sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream_straight")
    return out, pretrain(tiny_model, sources, out, "trainer.max_steps=8", "trainer.save_every=2",
                         "trainer.keep_last=4", "cluster.policy.num_ranks=2")


def test_resumed_run_trains_on_exactly_the_same_sequences(tiny_model, sources, uninterrupted, tmp_path):
    crashed = tmp_path / "pretrain"
    as_crashed_after_step_5(uninterrupted[0], crashed)
    for rank in (0, 1):  # the trace as the crash left it: steps 1-5
        path = crashed / "data_trace" / f"rank{rank}.jsonl"
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:5]))
    resumed = pretrain(tiny_model, sources, crashed, "trainer.max_steps=8", "trainer.save_every=2",
                       "cluster.policy.num_ranks=2", "resume=auto")
    assert [m["step"] for m in resumed] == list(range(1, 9))
    for rank in (0, 1):
        expected, got = traces(uninterrupted[0], rank), traces(crashed, rank)
        assert got == expected, f"rank {rank} trained on other sequences after the resume"
        assert len(expected[1]) == 4  # batch 8 over two ranks
    assert set(traces(uninterrupted[0], 0)[1]).isdisjoint(traces(uninterrupted[0], 1)[1]), "ranks read apart"
    for a, b in zip(uninterrupted[1][4:], resumed[4:]):
        assert b["train/loss"] == pytest.approx(a["train/loss"], abs=1e-6)
    position = json.loads((crashed / "checkpoints" / "step_000008" / "policy" / "data_rank1.json").read_text())
    assert position["world_size"] == 2 and set(position["sources"]) == {"arith", "words"}


def test_mixture_shares_match_the_weights_and_loss_falls(ray_cluster, tiny_model, sources, tmp_path):
    metrics = pretrain(tiny_model, sources, tmp_path, "trainer.max_steps=200", "cluster.policy.num_ranks=1",
                       "data.stream.trace=false", "trainer.lr=3e-3")
    shares = [m["data/arith_share"] for m in metrics]
    assert abs(shares[-1] - 0.7) <= 0.02 and abs(metrics[-1]["data/words_share"] - 0.3) <= 0.02
    assert all(abs(s - 0.7) <= 1 / (8 * m["step"]) + 1e-9 for s, m in zip(shares, metrics))  # within a sequence
    losses = [m["train/loss"] for m in metrics]
    assert sum(losses[-10:]) < 0.6 * sum(losses[:10])


def test_curated_corpus_feeds_streamed_pretraining(ray_cluster, tiny_model, tmp_path):
    curated = tmp_path / "curated"
    run_job("curate", curated, "curate.corpus.num_docs=300", "curate.quality.enabled=false",
            "curate.near_dedup.enabled=false")
    metrics = run_job("pretrain", tmp_path / "pretrain", f"model.path={tiny_model}", f"data.train={curated / 'data'}",
                      "data.streaming=true", "data.max_length=64", "trainer.batch_size=8", "trainer.max_steps=40",
                      "cluster.policy.num_ranks=2", "data.stream.piece_mb=0.05")
    losses = [m["train/loss"] for m in metrics]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert all(m["perf/tokens_per_s"] > 0 for m in metrics)


def test_streamed_sft_learns_the_answers(ray_cluster, tiny_model, tmp_path):
    task = ArithmeticTask(seed=0, heldout_size=50)
    rows = [{"messages": c["messages"]} for c in task.sft_conversations("train")]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"prompt": r["messages"][-1]["content"],
                                                             "answer": r["answer"]}) + "\n"
                                                 for r in task.rl_prompts("heldout")[:20]))
    metrics = run_job("sft", tmp_path / "sft", f"model.path={tiny_model}", f"data.train={tmp_path / 'chat.jsonl'}",
                      f"data.eval={tmp_path / 'eval.jsonl'}", "data.streaming=true", "trainer.max_steps=30",
                      "trainer.batch_size=8", "cluster.policy.num_ranks=2", "data.stream.piece_mb=0.05")
    losses = [m["train/loss"] for m in metrics]
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert "eval/accuracy" in metrics[-1]


def test_malformed_row_deep_in_a_shard_is_one_clear_error(ray_cluster, tiny_model, sources, tmp_path):
    from rlsys.launchers.run import user_message

    bad = tmp_path / "bad.jsonl"
    lines = (sources / "arith.jsonl").read_text().splitlines()
    bad.write_text("\n".join(lines[:60] + ['{"text": "cut off'] + lines[60:]) + "\n")
    with pytest.raises(Exception) as failure:
        run_job("pretrain", tmp_path / "out", f"model.path={tiny_model}", f"data.train={bad}", "data.streaming=true",
                "data.max_length=64", "trainer.batch_size=8", "trainer.max_steps=20", "cluster.policy.num_ranks=1",
                "fault_tolerance.max_restarts=0")
    message = user_message(failure.value)
    assert message and "is not a valid JSON object" in message and "bad.jsonl" in message, message


def test_sources_read_their_epochs_then_the_run_ends_finished(ray_cluster, tiny_model, sources, tmp_path):
    """arith once, words twice: past that the run stops early with its final checkpoint, not an error."""
    metrics = pretrain(tiny_model, sources, tmp_path, "trainer.max_steps=100000", "cluster.policy.num_ranks=1",
                       "data.stream.trace=false", "data.max_length=128", "trainer.batch_size=32",
                       f"data.mixture=[{{path: {sources / 'arith.jsonl'}, epochs: 1}}, "
                       f"{{path: {sources / 'words'}, epochs: 2, columns: {{text: body}}}}]")
    assert 5 < len(metrics) < 1000
    assert (tmp_path / "checkpoints" / "final" / "model.safetensors").exists()
