"""Multi-turn episodes on real Ray actors: the trained tokens are the sampled tokens, the loss mask covers
exactly the model's, and environments that raise, hang, return nonsense or kill their process cost their
episodes (counted) or stop the run with one clear message."""
import math
from pathlib import Path

import pytest
import torch

from rlsys.actors.rollout import Sampling
from rlsys.data.task import ArithmeticTask
from rlsys.engine.batch import to_tensors
from rlsys.envs.loading import EnvSpec, load_env_class
from rlsys.models.builders import end_of_turn_ids, load_tokenizer
from rlsys.rollouts.episodes import EnvironmentFailed, EpisodeRunner, Limits

pytestmark = pytest.mark.e2e
ENVS = Path(__file__).parent / "faulty_envs.py"
ROWS = ArithmeticTask(seed=0).rl_prompts("heldout")[:16]


def spec(name: str, timeout_s: float = 20.0) -> EnvSpec:
    label, cls = load_env_class(type("Env", (), {"path": f"{ENVS}:{name}", "name": None})())
    return EnvSpec(label, cls, {}, timeout_s)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(tiny_model)


def runner_for(tokenizer, env: EnvSpec, max_error_rate: float = 1.0, max_turns: int = 3) -> EpisodeRunner:
    runner = EpisodeRunner(env, tokenizer, end_of_turn_ids(tokenizer), Limits(max_turns, 200, max_error_rate))
    runner.start(num_workers=2, cpus_per_worker=0)
    return runner


def scripted(tokenizer):
    """Every turn answers "12" and ends it, like a model would."""
    ids = tokenizer("12", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return lambda prompts, seed: [{"response_ids": ids, "logp": [-0.5] * len(ids), "finish_reason": "stop"}
                                  for _ in prompts]


def test_sampled_tokens_are_trained_as_sampled(ray_cluster, vllm_rollout, tokenizer):
    """Real vLLM turns against the retry environment (the untrained model is always wrong, so every episode
    has three turns and two observations): token by token, each model turn in the trajectory is what the
    engine returned, observations are the template's rendering, the packed training row holds exactly these
    ids and its loss mask is 1 on the model's tokens only; the engine's logprobs of the finished sequence
    match the sampler's at every model token (nothing drifted)."""
    from rlsys.envs.retry import RetryEnv

    stops = end_of_turn_ids(tokenizer)
    calls: list[tuple[list, list]] = []

    def generate(prompts, seed):
        out = vllm_rollout.generate(prompts, Sampling(n=1, max_new_tokens=12, stop_token_ids=stops), seed=seed)
        calls.append((prompts, out))
        return out

    runner = runner_for(tokenizer, EnvSpec("retry", RetryEnv, {}, 20.0))
    try:
        trajectories = runner.run(ROWS[:6], generate, seed=3)
    finally:
        runner.stop()
    assert [t.turns for t in trajectories] == [3] * 6 and len(calls) == 3
    for t in trajectories:
        runs = mask_runs(t.loss_mask)
        assert [model for *_, model in runs] == [True, False, True, False, True], "turn, observation, ..."
        assert [end - 1 for start, end, model in runs if model] == t.turn_ends
        for turn, (start, end, _) in enumerate(mask_runs(t.loss_mask, keep=1.0)):
            prompts, outputs = calls[turn]
            sampled = outputs[prompts.index(t.prompt_ids + t.response_ids[:start])]
            assert t.response_ids[start:end] == sampled["response_ids"]
            assert t.logp[start:end] == sampled["logp"]
        for start, end, model in mask_runs(t.loss_mask, keep=0.0):
            ended = t.response_ids[start - 1] in stops
            observation = tokenizer.decode(t.response_ids[start:end])
            assert observation == ("" if ended else "<|im_end|>") + \
                "\n<|im_start|>user\nThat is not right. Try again.<|im_end|>\n<|im_start|>assistant\n"
            assert all(math.isnan(x) for x in t.logp[start:end])
    samples = [t.sample() for t in trajectories]
    batch, layout = to_tensors({k: [s[k] for s in samples] for k in ("prompt_ids", "response_ids", "loss_mask")},
                               tokenizer.pad_token_id)
    for i, t in enumerate(trajectories):
        row, first = layout.rows[i], layout.starts[i]
        sequence = t.prompt_ids + t.response_ids
        assert batch["input_ids"][row, first:first + len(sequence)].tolist() == sequence
        targets = slice(first + len(t.prompt_ids) - 1, first + len(sequence) - 1)
        assert batch["response_mask"][row, targets].tolist() == t.loss_mask
    assert batch["response_mask"].sum().item() == sum(sum(t.loss_mask) for t in trajectories), "nothing else"
    rescored = vllm_rollout.prompt_logprobs([t.prompt_ids + t.response_ids for t in trajectories])[0]
    for t, logp in zip(trajectories, rescored):
        model = [i for i, m in enumerate(t.loss_mask) if m]
        after_prompt = logp[len(t.prompt_ids) - 1:]
        assert torch.allclose(torch.tensor([after_prompt[i] for i in model]), torch.tensor([t.logp[i] for i in model]),
                              atol=2e-3)


def mask_runs(mask: list[float], keep: float | None = None) -> list[tuple[int, int, bool]]:
    """(start, end, is_model) of each run of equal mask values (only those equal to `keep` when given)."""
    runs, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            if keep is None or mask[start] == keep:
                runs.append((start, i, mask[start] == 1.0))
            start = i
    return runs


@pytest.mark.parametrize("env", ["AskTwice", "AsyncAskTwice"])
def test_user_environment_plays_episodes(ray_cluster, tokenizer, env):
    runner = runner_for(tokenizer, spec(env))
    try:
        trajectories = runner.run(ROWS[:4], scripted(tokenizer), seed=0)
    finally:
        runner.stop()
    for t in trajectories:
        assert t.finish_reason == "done" and t.turns == 2 and t.turn_rewards == [0.5, 1.0] and t.error is None
        assert t.final_answer == "12" and [m["role"] for m in t.messages][-3:] == ["assistant", "user", "assistant"]


@pytest.mark.parametrize("env, error", [("RaisesOnSeven", "ValueError: the tool backend is down"),
                                        ("Hangs", "did not return within env.timeout_s=2s"),
                                        ("Malformed", "step() returned str"),
                                        ("ResetsToText", "reset() returned str 'What is"),
                                        ("KillsItsProcess", "the environment worker died")])
def test_failing_environment_costs_its_episodes(ray_cluster, tokenizer, env, error, capsys):
    runner = runner_for(tokenizer, spec(env, timeout_s=2.0))
    try:
        trajectories = runner.run(ROWS, scripted(tokenizer), seed=0)
        again = runner.run(ROWS[:2], scripted(tokenizer), seed=0)  # the pool still serves (a dead worker replaced)
    finally:
        runner.stop()
    failed = [t for t in trajectories if t.error]
    expected = [r for r in ROWS if r["answer"].endswith("7")] if env == "RaisesOnSeven" else ROWS
    assert len(failed) == len(expected) > 0 and all(error in t.error for t in failed)
    assert all(sum(t.loss_mask) == 0 for t in failed), "a failed episode trains nothing"
    assert len(again) == 2
    assert "episodes failed and were not trained on" in capsys.readouterr().out


def test_too_many_failures_stop_with_one_message(ray_cluster, tokenizer):
    runner = runner_for(tokenizer, spec("RaisesOnSeven"), max_error_rate=0.0)
    try:
        with pytest.raises(EnvironmentFailed) as raised:
            runner.run(ROWS, scripted(tokenizer), seed=0)
    finally:
        runner.stop()
    message = str(raised.value)
    assert "faulty_envs.py:RaisesOnSeven" in message and "What is" in message
    assert "ValueError: the tool backend is down" in message and "env.max_error_rate" in message
