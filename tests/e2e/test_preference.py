"""Preference learning and AI feedback on the real stack: a reward model, DPO, and GRPO scored by both a reward
model and the policy judging itself."""
from pathlib import Path

import pytest
import torch

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e
SHAPED_REWARDS = Path(__file__).parent / "shaped_rewards.py"


def evals(metrics: list[dict], key: str = "eval/accuracy") -> list[float]:
    return [m[key] for m in metrics if m.get(key) is not None]


@pytest.fixture(scope="module")
def reward_model(sft_model, tmp_path_factory):
    """A reward model trained from the session's SFT checkpoint (a shortened preset: 450 steps of 64 pairs; at 300
    the accuracy reached depends on the CPU's float rounding, 0.68 on one machine and above 0.75 on another)."""
    out = tmp_path_factory.mktemp("rm")
    metrics = run_job("rm", out, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", "trainer.max_steps=450",
                      "trainer.batch_size=64", "trainer.eval_every=150")
    return out, metrics


def test_reward_model_learns_to_rank_held_out_pairs(reward_model):
    accuracy = evals(reward_model[1])
    assert accuracy[0] < 0.65, "an untrained head ranks pairs at about chance"
    assert accuracy[-1] >= 0.75, f"held-out pair accuracy {accuracy}"


def test_reward_model_loads_in_transformers_and_prefers_the_right_answer(reward_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = reward_model[0] / "checkpoints" / "final"
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    question = [{"role": "user", "content": "What is 12 + 7?"}]
    texts = [tokenizer.apply_chat_template(question + [{"role": "assistant", "content": a}], tokenize=False).rstrip("\n")
             for a in ("19", "91", "18", "29")]
    with torch.no_grad():
        scores = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits[:, 0]
    assert model.config.num_labels == 1 and scores.shape == (4,)
    assert scores[0] > scores[1:].min(), f"scores {scores.tolist()}"


def test_dpo_widens_the_margin_and_raises_accuracy(sft_model, tmp_path):
    metrics = run_job("dpo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}",
                      "trainer.eval_every=50", "trainer.eval_samples=500")
    margins, accuracy = evals(metrics, "eval/margin"), evals(metrics)
    assert margins[0] == pytest.approx(0.0, abs=1e-4), "policy == reference at the start"
    assert margins[-1] > 0.03 and evals(metrics, "eval/preference_accuracy")[-1] > 0.55, f"margins {margins}"
    # the session's SFT model answers ~4% of the 500 held-out problems: +1.5 points is ~2.5 standard errors
    assert accuracy[-1] >= accuracy[0] + 0.015, f"held-out accuracy {accuracy}"
    train = [m for m in metrics if "train/margin" in m]
    assert {"train/chosen_reward", "train/rejected_reward", "train/accuracy"} <= set(train[-1])


def test_grpo_with_a_reward_model_and_a_self_judge_runs_end_to_end(reward_model, sft_model, tmp_path):
    rm = reward_model[0] / "checkpoints" / "final"
    metrics = run_job("grpo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}",
                      f"reward=[{{type:model,name:rm,path:'{rm}'}},{{type:judge,weight:0.5}}]",
                      "judge.model=policy", "judge.template='{prompt} {completion} ='", "judge.max_score=200",
                      "judge.max_parse_failure_rate=1.0", "trainer.max_steps=3", "trainer.eval_every=0",
                      "trainer.eval_samples=20", "algo.n_samples=4", "trainer.batch_size=8")
    steps = [m for m in metrics if "reward/mean" in m]
    assert len(steps) == 3
    for key in ("reward/rm", "reward/judge", "reward/judge_parse_failures"):
        assert all(key in m for m in steps), key
    assert any(m["reward/rm"] != 0 for m in steps), "the reward model scored the samples"


@pytest.mark.parametrize("loss", ["kto", "orpo"])
def test_kto_and_orpo_learn_to_prefer_the_right_answer(loss, sft_model, tmp_path):
    """KTO from the pairs split into thumbs up / down rows, ORPO with no reference model at all."""
    metrics = run_job("dpo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}",
                      f"algo.preference_loss={loss}", "trainer.max_steps=40", "trainer.eval_every=20",
                      "trainer.eval_samples=200")
    preference = evals(metrics, "eval/preference_accuracy")
    # above chance and above where it started (KTO levels off near 0.57-0.62, by CPU: the float rounding differs)
    assert preference[-1] > max(0.5, preference[0] + 0.05), f"{loss}: held-out preference accuracy {preference}"
    accuracy = evals(metrics)
    assert accuracy[-1] >= accuracy[0], f"{loss}: held-out accuracy {accuracy}"


def test_online_dpo_learns_from_pairs_of_its_own_samples(sft_model, tmp_path):
    """Each step the policy answers 16 prompts 4 times on vLLM; the best against the worst by the reward train it."""
    metrics = run_job("dpo", tmp_path, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", "algo.online=true",
                      f"reward=[{{type:function,path:'{SHAPED_REWARDS}:leading_one'}}]", "algo.n_samples=4",
                      "trainer.batch_size=16", "trainer.max_steps=12", "algo.round_steps=2", "trainer.eval_samples=50")
    steps = [m for m in metrics if "online/pairs_trained" in m]
    assert len(steps) == 12 and all(m["online/pairs_trained"] > 0 for m in steps)
    rounds = [m for m in steps if "online/pairs" in m]
    assert [m["step"] for m in rounds] == [1, 3, 5, 7, 9, 11], "new samples every algo.round_steps steps"
    rewards = [m["online/reward_mean"] for m in rounds]
    assert sum(rewards[-2:]) > sum(rewards[:2]), f"the policy's own answers score higher: {rewards}"
