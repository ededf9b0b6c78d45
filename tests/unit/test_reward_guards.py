"""Guards against over-optimising a learned reward: ensembles, monitored gold terms and the gold watch, reward
normalisation, clipping and length penalty, online pairs, near-miss pairs and thumbs feedback."""
import json
import math

import numpy as np
import pytest
import torch

from rlsys.algorithms import bradley_terry_loss
from rlsys.algorithms.ensemble import bootstrap_weights, combine_heads
from rlsys.algorithms.reward_guards import RunningMoments, guard_rewards
from rlsys.config.compose import compose_job
from rlsys.config.validate import to_typed
from rlsys.data.task import ArithmeticTask
from rlsys.errors import ConfigError, DataError
from rlsys.loop.gold_watch import BEST, STOP, GoldWatch
from rlsys.rewards import RewardConfigError, build_reward
from rlsys.trainers.online_pairs import ranked_pairs


# ---- ensembles ------------------------------------------------------------------------------------------
def test_ensemble_scores_are_mean_minus_penalty_times_std_or_the_minimum():
    heads = [[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]]
    mean, spread = combine_heads(heads)
    assert mean.tolist() == [2.0, 2.0, 2.0] and spread.tolist() == [1.0, 0.0, 2.0]
    penalised, _ = combine_heads(heads, "mean", penalty=0.5)
    assert penalised.tolist() == [1.5, 2.0, 1.0], "the answer the heads disagree on most loses most"
    assert combine_heads(heads, "min")[0].tolist() == [1.0, 2.0, 0.0]
    assert combine_heads([[0.7], [-0.2]])[0].tolist() == [0.7, -0.2], "one head: its score"
    with pytest.raises(ValueError, match="unknown ensemble"):
        combine_heads(heads, "median")


def test_bootstrap_weights_are_deterministic_poisson_draws_per_pair_and_head():
    weights = bootstrap_weights(range(4000), heads=4, seed=3)
    assert weights.shape == (4000, 4)
    assert np.array_equal(weights[17], bootstrap_weights([17], heads=4, seed=3)[0]), "a pure function of the pair"
    assert abs(weights.mean() - 1.0) < 0.05 and abs(weights.var() - 1.0) < 0.1, "Poisson(1)"
    assert (weights == 0).mean() == pytest.approx(math.exp(-1), abs=0.02), "each head leaves out ~37% of pairs"
    assert not np.array_equal(weights[:, 0], weights[:, 1]), "heads see different data"
    assert np.array_equal(bootstrap_weights([5, 6], heads=1), np.ones((2, 1)))


def test_bradley_terry_over_heads_weights_each_heads_pairs():
    chosen = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    rejected = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    weights = torch.tensor([[1.0, 0.0], [2.0, 1.0]])
    loss, metrics = bradley_terry_loss(chosen, rejected, weights=weights)
    softplus = lambda x: math.log1p(math.exp(-x))  # -log sigmoid(x)
    expected = (softplus(2.0) * 1 + softplus(-1.0) * 0 + softplus(1.0) * 2 + softplus(-2.0) * 1) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["accuracy"] == 0.5, "by the heads' mean: pair 0 ranked right (0.5 > -0.5), pair 1 not"
    assert metrics["head_std"] == pytest.approx((math.sqrt(4.5) + math.sqrt(4.5)) / 2, rel=1e-6)


# ---- monitored terms and the gold watch -----------------------------------------------------------------
def test_a_monitored_term_is_scored_and_reported_but_not_trained_on():
    reward = build_reward([{"type": "rule", "name": "answer_match", "monitor": True, "ensemble": "mean",
                            "ensemble_penalty": 0.0},
                           {"type": "function", "path": "tests/e2e/shaped_rewards.py:leading_one", "weight": 2.0}])
    total, per_term = reward(["q", "q"], ["12", "7"], {"answer": ["7", "7"]})
    assert total.tolist() == [2.0, 0.0], "only the proxy (leading_one) counts"
    assert per_term["answer_match"].tolist() == [0.0, 1.0]
    assert reward.gold(per_term).tolist() == [0.0, 1.0]
    assert build_reward([{"type": "rule", "name": "answer_match"}]).gold({"answer_match": np.ones(1)}) is None
    with pytest.raises(RewardConfigError, match="nothing is left to train on"):
        build_reward([{"type": "rule", "name": "answer_match", "monitor": True}])


def test_gold_watch_marks_bests_and_stops_when_gold_falls_while_the_proxy_rises():
    watch = GoldWatch(window=2, tolerance=0.1)
    gold = [0.2, 0.4, 0.6, 0.6, 0.5, 0.4, 0.3]
    proxy = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    verdicts = [watch.observe(s, {"reward/gold": g, "reward/proxy": p})
                for s, (g, p) in enumerate(zip(gold, proxy), start=1)]
    assert verdicts[:5] == [None, BEST, BEST, BEST, None]  # window means 0.3, 0.5, 0.6, then 0.55
    assert verdicts[5] == STOP, "gold mean 0.45 < best 0.6 - 0.1 while the proxy mean rose"
    assert watch.metrics() == {"gold/best_mean": pytest.approx(0.6), "gold/best_step": 4.0}
    restored = GoldWatch(window=2, tolerance=0.1)
    restored.load_state_dict(json.loads(json.dumps(watch.state_dict())))
    assert restored.state_dict() == watch.state_dict()


def test_gold_watch_does_not_stop_when_the_proxy_falls_with_the_gold():
    watch = GoldWatch(window=1, tolerance=0.0)
    seen = [watch.observe(s, {"reward/gold": g, "reward/proxy": g}) for s, g in enumerate([0.5, 0.9, 0.2, 0.1], 1)]
    assert seen == [BEST, BEST, None, None], "both falling is a bad step, not reward hacking"


def test_stop_on_gold_drop_needs_a_monitored_term_and_an_rl_job():
    with pytest.raises(ConfigError, match="needs a gold reward: mark a term monitor: true"):
        to_typed(compose_job("ppo", ["trainer.stop_on_gold_drop=true"]))
    with pytest.raises(ConfigError, match="watches RL rollouts"):
        to_typed(compose_job("sft", ["trainer.stop_on_gold_drop=true"]))
    ok = to_typed(compose_job("ppo", ["trainer.stop_on_gold_drop=true",
                                      "reward=[{type:function,path:'x.py:f'},{type:rule,name:answer_match,monitor:true}]"]))
    assert ok.reward[1].monitor
    with pytest.raises(ConfigError, match=r"config key .reward\[0\].ensemble. is .median.; allowed: mean, min"):
        to_typed(compose_job("ppo", ["reward=[{type:model,path:rm,ensemble:median}]"]))


# ---- normalisation, clipping, length --------------------------------------------------------------------
def test_running_moments_match_the_moments_of_everything_seen():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size) for size in (5, 64, 1, 17)]
    moments = RunningMoments()
    for batch in batches:
        moments.update(batch)
    everything = np.concatenate(batches)
    assert moments.count == len(everything)
    assert moments.mean == pytest.approx(everything.mean()) and moments.std == pytest.approx(everything.std())
    copy = RunningMoments()
    copy.load_state_dict(moments.state_dict())
    assert copy.state_dict() == moments.state_dict()


def test_guards_penalise_length_normalise_and_clip():
    shaped, terms = guard_rewards(np.array([1.0, 1.0, 5.0]), [2, 10, 0], None, length_penalty=0.1)
    assert shaped.tolist() == pytest.approx([0.8, 0.0, 5.0]) and terms["length_penalty"].tolist() == [-0.2, -1.0, 0.0]
    moments = RunningMoments()
    shaped, terms = guard_rewards(np.array([0.0, 0.0, 0.0, 10.0]), [1] * 4, moments, clip=1.5)
    z = (10.0 - 2.5) / math.sqrt(18.75)  # mean 2.5, std sqrt(18.75)
    assert shaped.tolist() == pytest.approx([-2.5 / math.sqrt(18.75)] * 3 + [min(z, 1.5)])
    assert terms["clipped"].tolist() == [0.0, 0.0, 0.0, 1.0]


# ---- online pairs ---------------------------------------------------------------------------------------
def test_online_pairs_are_the_best_against_the_worst_of_the_policys_samples():
    answers = [[1], [2], [3], [4], [5]]
    pairs = ranked_pairs([9, 9], answers, [0.5, 1.0, 0.0, 1.0, 0.2], pairs=2)
    assert [(p["chosen_ids"], p["rejected_ids"]) for p in pairs] == [([2], [3]), ([4], [5])]
    assert all(p["prompt_ids"] == [9, 9] for p in pairs)
    assert ranked_pairs([9], answers, [1.0] * 5, pairs=2) == [], "all answers scored the same: no pair"
    assert len(ranked_pairs([9], answers[:3], [0, 1, 2], pairs=4)) == 1, "at most half the samples pair up"


def test_online_dpo_config_errors():
    with pytest.raises(ConfigError, match="use algo.preference_loss=sigmoid, ipo or orpo"):
        to_typed(compose_job("dpo", ["algo.online=true", "algo.preference_loss=kto"]))
    with pytest.raises(ConfigError, match="pairs_per_prompt"):
        to_typed(compose_job("dpo", ["algo.online=true", "algo.n_samples=4", "algo.pairs_per_prompt=3"]))
    with pytest.raises(ConfigError, match="is online DPO"):
        to_typed(compose_job("rm", ["algo.online=true"]))


# ---- data: near misses and thumbs ---------------------------------------------------------------------
def test_near_miss_pairs_are_off_by_one_and_the_dropped_carry():
    task = ArithmeticTask(seed=0, heldout_size=50, max_operand=49)
    pairs = task.near_miss_pairs("heldout")
    by_question: dict[str, list[int]] = {}
    for p in pairs:
        by_question.setdefault(p["prompt"][0]["content"], []).append(int(p["rejected"]))
    for problem in task.problems("heldout"):
        value = int(problem.answer)
        rejected = set(by_question[problem.question])
        assert {value + 1} <= rejected and (value == 0 or value - 1 in rejected) and value not in rejected
        if problem.a % 10 + problem.b % 10 >= 10:  # a carry: dropping it is a near miss too
            assert len(rejected) == 3


def test_thumbs_labels_and_feedback_rows(tmp_path):
    from rlsys.data.job_data import feedback_rows, thumbs
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.builders import load_tokenizer
    from rlsys.models.tiny import build_tiny_model

    assert [thumbs(v, "row") for v in (True, "false", 1, "0", "up", "Down")] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    with pytest.raises(DataError, match="row 3: label 'maybe' is not a thumbs up or down"):
        thumbs("maybe", "row 3")
    model = build_tiny_model(tmp_path / "tiny", seed=0, texts=tokenizer_texts())
    data = tmp_path / "thumbs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [{"question": "What is 1 + 1?", "reply": "2", "good": True},
                                                       {"question": "What is 1 + 2?", "reply": "4", "good": False}]))
    cfg = to_typed(compose_job("dpo", [f"model.path={model}", f"data.train={data}", "algo.preference_loss=kto",
                                       "data.columns.prompt=question", "data.columns.response=reply",
                                       "data.columns.label=good"]))
    tokenizer = load_tokenizer(str(model))
    rows = feedback_rows(cfg, tokenizer, "train")
    assert [r["desirable"] for r in rows] == [1.0, 0.0]
    assert tokenizer.decode(rows[1]["response_ids"], skip_special_tokens=True).strip() == "4"
    embedded = feedback_rows(to_typed(compose_job("dpo", [f"model.path={model}"])), tokenizer, "eval")
    assert [r["desirable"] for r in embedded[:4]] == [1.0, 0.0, 1.0, 0.0], "each pair: its chosen up, rejected down"
