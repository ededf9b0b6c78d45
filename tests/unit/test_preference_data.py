"""Preference pairs as token ids: the embedded task's pairs and a user's jsonl, chosen/rejected as text or turns."""
import json

import pytest

from rlsys.config.compose import compose_job
from rlsys.config.validate import to_typed
from rlsys.data.job_data import preference_pairs
from rlsys.errors import DataError


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.builders import load_tokenizer
    from rlsys.models.tiny import build_tiny_model

    return load_tokenizer(str(build_tiny_model(tmp_path_factory.mktemp("pref") / "tiny", texts=tokenizer_texts())))


def config(*overrides: str):
    return to_typed(compose_job("rm", list(overrides)))


def test_embedded_pairs_have_several_distinct_rejects_per_problem(tokenizer):
    pairs = preference_pairs(config("data.task.rejected_per_problem=3", "data.task.near_misses=false"), tokenizer,
                             "train")
    first = [p for p in pairs if p["prompt_ids"] == pairs[0]["prompt_ids"]]
    assert len(first) == 3 and len({tuple(p["rejected_ids"]) for p in first}) == 3
    hard = preference_pairs(config("data.task.rejected_per_problem=3"), tokenizer, "train")  # rm: near misses on
    rejects = {tokenizer.decode(p["rejected_ids"], skip_special_tokens=True) for p in hard
               if p["prompt_ids"] == pairs[0]["prompt_ids"]}
    answer = int(tokenizer.decode(first[0]["chosen_ids"], skip_special_tokens=True))
    assert {str(answer + 1), str(answer - 1)} <= rejects and len(rejects) >= 3, "every off-by-one is a rejected answer"
    assert all(p["chosen_ids"] != p["rejected_ids"] for p in pairs)
    assert all(p["chosen_ids"][-1] == tokenizer.eos_token_id for p in pairs), "responses end at end-of-turn"
    assert len(preference_pairs(config(), tokenizer, "eval")) == 500, "one pair per held-out problem"


def test_user_pairs_as_text_or_turns(tokenizer, tmp_path):
    rows = [{"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
            {"prompt": [{"role": "user", "content": "What is 3 + 3?"}],
             "chosen": [{"role": "user", "content": "What is 3 + 3?"}, {"role": "assistant", "content": "6"}],
             "rejected": [{"role": "user", "content": "What is 3 + 3?"}, {"role": "assistant", "content": "9"}]}]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = preference_pairs(config(f"data.train={path}"), tokenizer, "train")
    assert [tokenizer.decode(p["chosen_ids"], skip_special_tokens=True) for p in pairs] == ["4", "6"]
    assert [tokenizer.decode(p["rejected_ids"], skip_special_tokens=True) for p in pairs] == ["5", "9"]


def test_pair_longer_than_the_context_is_named(tokenizer, tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": "x " * 300, "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match="preference pair 0 has .* tokens, more than data.max_length"):
        preference_pairs(config(f"data.train={path}"), tokenizer, "train")
