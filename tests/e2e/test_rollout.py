"""Rollout sampling on the real vLLM engine: per-sample seeds that are independent across prompts and samples,
and the same draws whatever the number of engines or chunks."""
import pytest

from rlsys.actors.rollout import Sampling, sample_seed

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


@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_chatml_turns_end_at_im_end_when_eos_is_another_token(sft_model, tmp_path, backend):
    """The SFT model as a base model fine-tuned on ChatML ships it: EOS is <|endoftext|>, the turn ends with
    <|im_end|>, generation_config names no EOS. Both backends stop at <|im_end|>, taken from the template."""
    import json
    import shutil

    from rlsys.actors.group import Placement, create_placement
    from rlsys.actors.rollout import RolloutGroup, RolloutSpec
    from rlsys.data.collate import render_ids
    from rlsys.models.builders import end_of_turn_ids, load_tokenizer

    folder = tmp_path / "chatml_base"
    shutil.copytree(sft_model[0] / "checkpoints" / "final", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "<|endoftext|>"}))
    (folder / "generation_config.json").unlink()
    tokenizer = load_tokenizer(str(folder))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id != im_end
    prompts = [render_ids(tokenizer, [{"role": "user", "content": f"What is {a} + {a}?"}], add_generation_prompt=True)
               for a in range(10, 16)]
    placement = Placement(create_placement(1, gpus=0, cpus=1), [0], num_gpus=0, num_cpus=1)
    engines = RolloutGroup(backend, RolloutSpec(model_path=str(folder), device="cpu", max_model_len=256,
                                                gpu_memory_utilization=0.1), placement,
                           env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"})
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=24, stop_token_ids=end_of_turn_ids(tokenizer))
    try:
        samples = engines.generate(prompts, greedy)
    finally:
        engines.kill()
    assert all(s["response_ids"][-1] == im_end and s["finish_reason"] == "stop" for s in samples), \
        [tokenizer.decode(s["response_ids"]) for s in samples]
