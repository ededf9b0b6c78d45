"""Pretraining and SFT on the real stack: 2 DeepSpeed ranks over gloo in Ray actors, transformers, vLLM."""
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.e2e.conftest import last, run_job

pytestmark = pytest.mark.e2e


def test_pretraining_loss_falls_by_half(pretrained):
    _, metrics = pretrained
    losses = [m["train/loss"] for m in metrics]
    first, final = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert final < first / 2, f"loss {first:.3f} -> {final:.3f}"


def test_sft_keeps_learning_and_does_not_lose_accuracy(pretrained, sft_model):
    before, after = last(pretrained[1], "eval/accuracy"), last(sft_model[1], "eval/accuracy")
    # the CI-sized pretraining leaves the model at a few percent, where 200 problems measure to about 2 points
    assert after >= before - 0.03, f"held-out accuracy {before:.3f} -> {after:.3f}"
    losses = [m["train/loss"] for m in sft_model[1]]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_final_checkpoint_loads_in_transformers_and_vllm(sft_model):
    """A fresh vLLM engine started on checkpoints/final (as `vllm.LLM(path)`) decodes what transformers decodes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlsys.actors.group import Placement, create_placement
    from rlsys.actors.rollout import RolloutGroup, RolloutSpec, Sampling

    final = sft_model[0] / "checkpoints" / "final"
    assert (final / "chat_template.jinja").exists() or "chat_template" in (final / "tokenizer_config.json").read_text()
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final)
    prompts = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": f"What is {a} + {b}?"}],
                                                       tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"] for a, b in ((12, 7), (40, 9), (25, 25))]
    eos = tokenizer.eos_token_id
    trim = lambda seq: seq[: seq.index(eos) + 1] if eos in seq else seq
    hf_answers = [trim(model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist())
                  for ids in prompts]

    placement = Placement(create_placement(1, gpus=0, cpus=1), [0], num_gpus=0, num_cpus=1)
    group = RolloutGroup("vllm", RolloutSpec(model_path=str(final), device="cpu", max_model_len=128,
                                             gpu_memory_utilization=0.1), placement)
    try:
        greedy = Sampling(n=1, temperature=0.0, max_new_tokens=8)
        vllm_answers = [trim(s["response_ids"]) for s in group.generate(prompts, greedy)]
    finally:
        group.kill()
    assert vllm_answers == hf_answers
    assert any(tokenizer.decode(a, skip_special_tokens=True).strip().isdigit() for a in hf_answers)


def test_zero3_trains(pretrained, tmp_path):
    metrics = run_job("sft", tmp_path, f"model.path={pretrained[0] / 'checkpoints' / 'final'}",
                      "deepspeed.zero_stage=3", "trainer.max_steps=30", "trainer.eval_samples=16")
    losses = [m["train/loss"] for m in metrics]
    assert sum(losses[-5:]) < 0.95 * sum(losses[:5])
    assert (tmp_path / "checkpoints" / "final" / "model.safetensors").exists()


def test_lora_sft_saves_a_merged_checkpoint(pretrained, tmp_path):
    from safetensors.torch import load_file

    base = pretrained[0] / "checkpoints" / "final"
    metrics = run_job("sft", tmp_path, f"model.path={base}", "model.lora.enabled=true", "model.lora.r=16",
                      "trainer.lr=5e-3", "trainer.max_steps=30", "trainer.eval_samples=16")
    losses = [m["train/loss"] for m in metrics]
    assert sum(losses[-5:]) < sum(losses[:5])
    merged, original = load_file(tmp_path / "checkpoints/final/model.safetensors"), load_file(base / "model.safetensors")
    assert set(merged) == set(original), "the merged checkpoint has the base model's tensor names, no adapters"
    changed = [k for k in merged if "q_proj.weight" in k and not torch.equal(merged[k], original[k])]
    assert changed, "LoRA deltas were merged into the attention projections"


def test_sigterm_saves_the_step_in_flight_and_resume_auto_is_exact(pretrained, tmp_path):
    """SIGTERM mid-run, as Kubernetes or `ray job stop` sends it: the job saves the step in flight, says where and
    exits 143; resume=auto goes on from it, and the steps after it equal an uninterrupted run's."""
    common = [f"model.path={pretrained[0] / 'checkpoints' / 'final'}", "trainer.eval_samples=8", "trainer.max_steps=16",
              "trainer.lr_schedule=constant", "trainer.warmup_steps=0", "logger=[jsonl]"]
    straight = run_job("sft", tmp_path / "straight", *common)
    out = tmp_path / "preempted"
    with open(tmp_path / "stderr.txt", "w") as stderr:  # a file: a pipe nobody reads could fill and block the job
        job = subprocess.Popen([sys.executable, "-m", "rlsys", "sft", f"output_dir={out}", *common],
                               stdout=subprocess.DEVNULL, stderr=stderr)
        log = out / "metrics.jsonl"
        while job.poll() is None and not (log.exists() and len(log.read_text().splitlines()) >= 2):
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=300)
    err = (tmp_path / "stderr.txt").read_text()
    assert job.returncode == 143, err[-3000:]
    stopped = int(re.search(r"stopped by SIGTERM after step (\d+), saved in \S+step_0000(\d\d)", err).group(1))
    assert 2 <= stopped < 16 and (out / "checkpoints" / "latest").read_text() == f"step_{stopped:06d}"
    resumed = run_job("sft", out, *common, "resume=auto")
    assert [m["step"] for m in resumed] == list(range(1, 17)), "no step lost or repeated"
    for a, b in zip(straight[stopped:], resumed[stopped:]):
        assert a["train/loss"] == pytest.approx(b["train/loss"], abs=1e-6)
        assert a["train/grad_norm"] == pytest.approx(b["train/grad_norm"], rel=1e-5)


def test_a_failing_final_evaluation_leaves_the_trained_model(pretrained, tmp_path):
    from rlsys.errors import EvaluationError
    from rlsys.logging import read_metrics

    (tmp_path / "broken.py").write_text("def score(prompts, completions, **columns):\n    raise OSError('disk gone')\n")
    with pytest.raises(EvaluationError) as failed:
        run_job("sft", tmp_path / "run", f"model.path={pretrained[0] / 'checkpoints' / 'final'}", "trainer.max_steps=2",
                f"eval.reward=[{{type: function, path: '{tmp_path / 'broken.py'}:score'}}]", "trainer.eval_samples=4")
    final = tmp_path / "run" / "checkpoints" / "final"
    assert "disk gone" in str(failed.value) and str(final) in str(failed.value)
    assert (final / "model.safetensors").exists() and (final / "config.json").exists()
    assert [m["step"] for m in read_metrics(str(tmp_path / "run"))] == [1, 2], "the last step's metrics are kept"
