"""Preference learning and AI feedback on the real stack: a reward model, DPO, and GRPO scored by both a reward
model and the policy judging itself."""
import pytest
import torch

from tests.e2e.conftest import run_job

pytestmark = pytest.mark.e2e


def evals(metrics: list[dict], key: str = "eval/accuracy") -> list[float]:
    return [m[key] for m in metrics if m.get(key) is not None]


@pytest.fixture(scope="module")
def reward_model(sft_model, tmp_path_factory):
    """A reward model trained from the session's SFT checkpoint (a shortened preset: 300 steps of 64 pairs)."""
    out = tmp_path_factory.mktemp("rm")
    metrics = run_job("rm", out, f"model.path={sft_model[0] / 'checkpoints' / 'final'}", "trainer.max_steps=300",
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
