"""`rlsys curate` on a two-node Ray cluster: the embedded corpus, then chat shards of one's own.

The figures the feature promises are measured on the default run: near-duplicate recall and precision, junk
removed, clean documents lost and the classifier's AUC. The cluster is this test's own (ray.cluster_utils),
so stopping it leaves any other Ray on the machine alone.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlsys.config.compose import compose_job
from rlsys.config.validate import to_typed
from rlsys.curation.corpus import chat_corpus, reference_texts
from rlsys.data.sources import as_messages, load_rows

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


def rlsys_curate(address: str, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlsys", "curate", f"cluster.address={address}",
                           f"output_dir={out}", *overrides], capture_output=True, text=True, timeout=300, cwd=ROOT)


def curate(address: str, out: Path, *overrides: str) -> tuple[str, dict]:
    result = rlsys_curate(address, out, *overrides)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, json.loads((out / "report.json").read_text())


def test_default_run_meets_the_figures_on_two_nodes_and_feeds_pretraining(two_nodes, tmp_path):
    stdout, report = curate(two_nodes, tmp_path)
    assert len(report["nodes"]) == 2, "both nodes ran the rules"
    assert [row["stage"] for row in report["funnel"]] == ["input", "heuristics", "exact_dedup", "near_dedup", "quality"]
    for stage in ("heuristics", "exact_dedup", "near_dedup", "quality"):
        assert f"curate: {stage}" in stdout and "docs/s" in stdout
    near = report["precision_recall"]["near_dedup"]
    assert near["recall"] >= 0.95 and near["precision"] >= 0.95
    assert report["overall"]["junk_removed"] >= 0.95 and report["overall"]["clean_lost"] < 0.05
    assert report["quality"]["auc_heldout_reference_vs_junk"] >= 0.9
    assert any("char_repetition" in r["reason"] and r["samples"] for r in report["drop_reasons"])
    assert (tmp_path / "funnel.png").exists()
    pretrain = to_typed(compose_job("pretrain", [f"data.train={tmp_path / 'data'}"]))
    rows = load_rows(pretrain.data.train, columns=dict(pretrain.data.columns), required=["text"]).rows
    assert len(rows) == report["funnel"][-1]["docs"]


def test_sft_selection_from_chat_shards_with_mapped_columns_and_bad_lines(two_nodes, tmp_path):
    shards = tmp_path / "chats"
    shards.mkdir()
    rows = chat_corpus(seed=3, num_rows=400)
    for part in range(2):  # two shards in input order, the chat column under its own name, a bad last line
        lines = [json.dumps({"conversation": r.pop("messages"), **r}) for r in rows[part * 200:(part + 1) * 200]]
        (shards / f"part-{part}.jsonl").write_text("\n".join(lines + ["{not json"] * part) + "\n")
    reference = tmp_path / "reference.jsonl"
    reference.write_text("\n".join(json.dumps({"text": t}) for t in reference_texts(seed=3, num_docs=200)))
    out = tmp_path / "out"
    failed = rlsys_curate(two_nodes, out, "curate=sft", f"data.train={shards}", "data.columns.messages=conversation",
                          f"curate.quality.reference={reference}")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        f"rlsys curate: error: line 201 of {shards / 'part-1.jsonl'} is not a valid JSON object (Expecting property "
        "name enclosed in double quotes: line 1 column 2 (char 1)). Fix the line, or set data.on_error=skip to skip "
        "malformed rows.")
    stdout, report = curate(two_nodes, out, "curate=sft", f"data.train={shards}", "data.columns.messages=conversation",
                            "data.on_error=skip", f"curate.quality.reference={reference}", "curate.select.top_k=100",
                            "curate.select.rank_by=length", "curate.output_format=parquet")
    assert "skipped 1 malformed rows" in stdout
    assert report["funnel"][-1] == {**report["funnel"][-1], "stage": "select", "docs": 100}
    near = report["precision_recall"]["near_dedup"]
    assert near["recall"] >= 0.95 and near["precision"] >= 0.95
    sft = to_typed(compose_job("sft", [f"data.train={out / 'data'}"]))
    kept = load_rows(sft.data.train, columns=dict(sft.data.columns), required=[]).rows
    assert len(kept) == 100 and all(as_messages(row)[-1]["role"] == "assistant" for row in kept)
