"""wandb in offline mode: config, namespaced metrics and sample tables reach the run files; a resume continues the run."""
import json

import pytest

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e
BLOCK, HEADER = 32768, 7  # a .wandb file: 7-byte header, then LevelDB-style log records in 32 KiB blocks


def wandb_records(path):
    """The protobuf records of an offline run file (wandb ships no reader for them any more)."""
    from wandb.proto.wandb_internal_pb2 import Record

    raw, pos, pending = path.read_bytes(), HEADER, b""
    while pos + 7 <= len(raw):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_offline_run_files(pretrained, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    common = [f"model.path={pretrained[0] / 'checkpoints' / 'final'}", "logger=[jsonl,wandb]", "wandb.mode=offline",
              "trainer.save_every=3", "trainer.eval_every=3", "trainer.eval_samples=8"]
    run_job("sft", tmp_path, *common, "trainer.max_steps=3")
    run_id = (tmp_path / "wandb_run_id").read_text()
    run_job("sft", tmp_path, *common, "trainer.max_steps=6", "resume=auto")
    assert (tmp_path / "wandb_run_id").read_text() == run_id, "the resumed job continues the same wandb run"

    runs = sorted((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(runs) == 2, "two sessions of one run id"
    history, config_keys, tables = {}, set(), []
    for run in runs:
        for record in wandb_records(run):
            kind = record.WhichOneof("record_type")
            if kind in ("run", "config"):  # wandb.init's config travels in the run record
                updates = record.run.config.update if kind == "run" else record.config.update
                config_keys |= {item.key for item in updates}
            elif kind == "history":
                items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
                history[int(items["_step"])] = items
                if "samples/_type" in items:  # a logged table arrives flattened: samples/_type, samples/path, ...
                    tables.append(json.loads(items["samples/_type"]))
    assert {"trainer", "model", "algo"} <= config_keys
    assert sorted(history) == [0, 1, 2, 3, 4, 5, 6], "every step once (0: the evaluation before training)"
    assert {"train/loss", "train/lr", "perf/tokens_per_s"} <= set(history[1])
    assert "eval/accuracy" in history[3] and "eval/accuracy" in history[6]
    assert tables == ["table-file"] * 3, "a sample table at each evaluation: steps 0, 3 and 6"
    table = json.loads(next(runs[-1].parent.glob("files/media/table/samples_*.table.json")).read_text())
    assert table["columns"] == ["prompt", "completion", "reward", "answer", "correct"] and table["data"]
