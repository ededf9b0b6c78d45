"""Guards against reward hacking on the real stack: a reward model ensemble with its near-miss accuracy, RL
through the guards with a monitored gold term, and a run stopped when its gold falls while the proxy rises."""
import json
from pathlib import Path

import pytest
import torch

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e
REWARDS = Path(__file__).parent / "shaped_rewards.py"


def evals(metrics: list[dict], key: str) -> list[float]:
    return [m[key] for m in metrics if m.get(key) is not None]


@pytest.fixture(scope="module")
def ensemble(sft_model, tmp_path_factory):
    """Three reward heads on one body, each trained on its own bootstrap of the pairs, in one rlsys rm run."""
    out = tmp_path_factory.mktemp("rm_ensemble")
    metrics = run_job("rm", out, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", "algo.reward_heads=3",
                      "trainer.max_steps=450", "trainer.batch_size=64", "trainer.eval_every=150")
    return out, metrics


def test_an_ensemble_learns_to_rank_and_reports_near_misses_and_its_worst_head(ensemble):
    metrics = ensemble[1]
    accuracy = evals(metrics, "eval/accuracy")
    assert accuracy[-1] >= max(0.62, accuracy[0] + 0.15), f"held-out pair accuracy {accuracy}"
    assert evals(metrics, "eval/worst_head_accuracy")[-1] >= 0.6, "every head learned, not only their mean"
    near = evals(metrics, "eval/near_miss/accuracy")
    assert len(near) == 4 and all(0 <= a <= 1 for a in near), "near misses: reported at every evaluation"
    assert all(m["train/head_std"] >= 0 for m in metrics if "train/head_std" in m)

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(ensemble[0] / "checkpoints" / "final")
    assert model.config.num_labels == 3, "the heads are the checkpoint's labels: transformers loads them as they are"
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[5, 6, 7]])).logits.shape == (1, 3)


def test_rl_through_the_guards_logs_proxy_gold_and_each_guard(ensemble, sft_model, tmp_path):
    rm = ensemble[0] / "checkpoints" / "final"
    metrics = run_job("grpo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}",
                      f"reward=[{{type:model,name:rm,path:'{rm}',ensemble_penalty:1.0}},"
                      f"{{type:rule,name:answer_match,monitor:true}}]",
                      "algo.reward_normalize=true", "algo.reward_clip=1.5", "algo.length_penalty=0.01",
                      "trainer.max_steps=4", "trainer.batch_size=8", "algo.n_samples=4", "trainer.eval_samples=20")
    steps = [m for m in metrics if "reward/mean" in m]
    assert len(steps) == 4
    for key in ("reward/proxy", "reward/gold", "reward/answer_match", "reward/rm", "reward/rm_head_std",
                "reward/clipped", "reward/length_penalty"):
        assert all(key in m for m in steps), key
    assert all(m["reward/gold"] == m["reward/answer_match"] for m in steps), "the monitored term is the gold"
    assert all(m["reward/rm_head_std"] > 0 for m in steps), "the heads disagree somewhere"
    assert all(abs(m["reward/mean"]) <= 1.5 for m in steps), "normalised and clipped"


def test_a_run_whose_gold_falls_while_the_proxy_rises_stops_with_its_best_checkpoint(sft_model, tmp_path):
    metrics = run_job("grpo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}",
                      f"reward=[{{type:function,path:'{REWARDS}:leading_one'}},"
                      f"{{type:function,path:'{REWARDS}:not_leading_one',monitor:true}}]",
                      "trainer.stop_on_gold_drop=true", "trainer.gold_window=4", "trainer.gold_tolerance=0.1",
                      "trainer.max_steps=60", "trainer.batch_size=16", "trainer.eval_samples=50")
    steps = [m for m in metrics if "reward/gold" in m]
    last = steps[-1]
    assert last["gold/stopped"] == 1.0 and last["step"] < 60, "stopped before max_steps"
    best = int(last["gold/best_step"])
    assert best < last["step"]
    assert last["reward/proxy"] > steps[best - 1]["reward/proxy"], "the proxy rose after the best gold"
    assert json.loads((tmp_path / "checkpoints" / "best" / "trainer_state.json").read_text())["step"] == best
    # the final Hugging Face checkpoint is the best step's policy, not the last step's
    from safetensors.torch import load_file

    final = load_file(tmp_path / "checkpoints" / "final" / "model.safetensors")
    saved = torch.load(tmp_path / "checkpoints" / "best" / "policy" / "deepspeed" / "mp_rank_00_model_states.pt",
                       map_location="cpu", weights_only=False)["module"]
    name = "model.embed_tokens.weight"
    assert torch.equal(final[name], saved[name].to(final[name].dtype)), "final == the best checkpoint's weights"
    assert "eval/accuracy" in last, "the best model is evaluated at the end"
