"""Rollout sampling on the real vLLM engine: per-sample seeds that are independent across prompts and samples,
and the same draws whatever the number of engines or chunks."""
import pytest

from actors.rollout import Sampling, sample_seed

pytestmark = pytest.mark.e2e


def test_neighbouring_prompts_draw_independent_samples(vllm_rollout):
    """The same prompt at positions i and i + 1: with seeds of the form base + i (vLLM adding the sample
    index), sample j + 1 of the first would repeat sample j of the second. Each sample has a seed of its own."""
    prompt = [5, 6, 7, 8, 9, 10]
    sampling = Sampling(n=4, temperature=1.0, max_new_tokens=8)
    samples = [s["response_ids"] for s in vllm_rollout.generate([prompt, prompt], sampling, seed=11)]
    first, second = samples[:4], samples[4:]
    shifted_repeats = sum(first[j + 1] == second[j] for j in range(3))
    assert shifted_repeats == 0, "samples of neighbouring prompts share their noise"
    assert len({tuple(s) for s in samples}) >= 6, "eight draws of an 8-token reply at temperature 1 mostly differ"
    again = [s["response_ids"] for s in vllm_rollout.generate([prompt, prompt], sampling, seed=11)]
    assert again == samples, "the draws are a pure function of (seed, prompt index, sample index)"


def test_seeds_differ_across_steps_prompts_and_samples():
    seeds = {sample_seed(step, i, j) for step in range(20) for i in range(32) for j in range(8)}
    assert len(seeds) == 20 * 32 * 8
