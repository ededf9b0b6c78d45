"""The funnel report's arithmetic, SFT selection helpers and the curate config, without Ray."""
import json

import numpy as np
import pyarrow as pa
import pytest

from rlsys.config.compose import compose_job
from rlsys.config.jobs import JOBS
from rlsys.config.validate import check_overrides, to_typed
from rlsys.curation import funnel_report
from rlsys.curation.curate import check
from rlsys.curation.sft_select import prompt_and_reply, top_k
from rlsys.errors import ConfigError, DataError

STAGES = ["heuristics", "exact_dedup", "near_dedup", "quality"]
TIMINGS = {"input": 1.0, "heuristics": 2.0, "exact_dedup": 0.5, "near_dedup": 1.0, "quality": 1.0}


def counts_of(rows):
    """(stage, reason, label, docs, tokens, input_tokens) rows as merge_summaries builds them."""
    return funnel_report.merge_summaries([json.dumps({"counts": rows, "samples": {}, "nodes": ["a"]})], 3)["counts"]


COUNTS = counts_of([
    ["", "", "clean", 90, 900, 900],
    ["heuristics", "gopher_quality:short_doc", "junk", 18, 20, 20],
    ["heuristics", "char_repetition:repeated_chars", "junk", 6, 60, 60],
    ["heuristics", "gopher_quality:short_doc", "clean", 2, 4, 4],
    ["exact_dedup", "exact_dedup:same_normalised_text", "exact_dup", 10, 100, 100],
    ["near_dedup", "near_dedup:jaccard>=0.7", "near_dup", 9, 90, 95],
    ["quality", "quality:score<0.22", "junk", 4, 40, 40],
    ["quality", "quality:score<0.22", "clean", 1, 10, 10],
    ["", "", "near_dup", 1, 10, 10],
])


def test_funnel_counts_documents_and_tokens_after_each_stage():
    rows = funnel_report.funnel(COUNTS, STAGES, TIMINGS)
    assert [(r["stage"], r["docs"]) for r in rows] == [("input", 141), ("heuristics", 115), ("exact_dedup", 105),
                                                       ("near_dedup", 96), ("quality", 91)]
    assert rows[0]["tokens"] == 1239 and rows[-1]["tokens"] == 910
    assert rows[1]["dropped"] == 26 and rows[1]["docs_per_s"] == 70.5


def test_precision_and_recall_per_filter_and_rule_set():
    pr = funnel_report.precision_recall(COUNTS, STAGES)
    assert pr["heuristics"] == {"target": "junk", "dropped": 26, "dropped_target": 24, "precision": 0.9231,
                                "recall": round(24 / 28, 4)}
    assert pr["heuristics/char_repetition"]["recall"] == round(6 / 28, 4)
    assert pr["heuristics/gopher_quality"]["recall"] == round(18 / 22, 4)  # what char_repetition left
    assert pr["near_dedup"]["recall"] == 0.9 and pr["near_dedup"]["precision"] == 1.0
    assert pr["quality"] == {"target": "junk", "dropped": 5, "dropped_target": 4, "precision": 0.8, "recall": 1.0}
    assert funnel_report.overall(COUNTS) == {"junk_removed": 1.0, "clean_lost": round(3 / 93, 4),
                                      "exact_dups_removed": 1.0, "near_dups_removed": 0.9}


def test_summaries_merge_samples_and_the_report_is_written(tmp_path):
    table = pa.table({"_id": [0, 1, 2], "_stage": ["", "heuristics", "heuristics"],
                      "_reason": ["", "blocklist:blocked_words", "blocklist:blocked_words"],
                      "_tokens": [5, 3, 4], "_input_tokens": [5, 3, 4], "_text": ["a b", "casino", "casino 2"],
                      "_dup_of": [-1, -1, -1], "_score": [float("nan")] * 3, "_node": ["n1", "n1", "n2"]})
    summary = funnel_report.merge_summaries([funnel_report.summarize_batch(table, samples=1)["summary"][0].as_py()], 1)
    assert summary["nodes"] == ["n1", "n2"]
    assert summary["samples"]["blocklist:blocked_words"] == [{"id": 1, "text": "casino"}]
    result = funnel_report.build(summary, ["heuristics"], {"input": 1.0, "heuristics": 1.0}, {}, {},
                          {"input": "x", "output": "y", "token_unit": "words"})
    assert "precision_recall" not in result  # no labels, no figures against them
    funnel_report.write(result, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["funnel"][1]["docs"] == 1
    assert (tmp_path / "funnel.png").stat().st_size > 10_000
    assert "blocklist:blocked_words" in funnel_report.table(result)


def test_prompt_and_reply_and_top_k():
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"},
                        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
                        {"role": "assistant", "content": "a2"}]}
    assert prompt_and_reply(row) == ("q1\n\nq2", "a1\n\na2")
    assert prompt_and_reply({"prompt": "q", "response": "a"}) == ("q", "a")
    with pytest.raises(DataError):
        prompt_and_reply({"text": "no chat here"})
    assert top_k(np.array([4, 1, 3, 2]), np.array([0.5, 0.9, 0.5, 0.1]), 2).tolist() == [1, 3]


def test_curate_config_composes_and_rejects_bad_values():
    assert "curate" in JOBS
    cfg = to_typed(compose_job("curate"))
    assert cfg.job == "curate" and cfg.curate.mode == "pretrain" and cfg.data.train is None
    sft = to_typed(compose_job("curate", ["curate=sft", "curate.select.top_k=10"]))
    assert sft.curate.mode == "sft" and sft.curate.near_dedup.ngram == 3 and sft.curate.select.top_k == 10
    with pytest.raises(ConfigError, match="Did you mean 'curate.near_dedup.threshold'"):
        check_overrides(["curate.near_dedup.treshold=0.5"])
    with pytest.raises(ConfigError, match="curate.select.rank_by"):
        to_typed(compose_job("curate", ["curate.select.rank_by=vibes"]))
    with pytest.raises(ConfigError, match="curate.quality.keep_fraction"):
        check(to_typed(compose_job("curate", ["curate.quality.keep_fraction=1.5"])).curate)
    with pytest.raises(ConfigError, match="rank_by=length"):
        check(to_typed(compose_job("curate", ["curate=sft", "curate.quality.enabled=false"])).curate)
