"""What a vLLM rollout engine is created with, for each layout: the `vllm.LLM` arguments and the process
environment. Pure functions of the engine's spec, so every layout (CPU, NCCL, CUDA IPC, tensor parallel,
colocated) is checked on any machine.
"""
from __future__ import annotations

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the adapter ranks vLLM compiles kernels for


def engine_env(spec) -> dict[str, str]:
    """Environment variables the engine's process needs, set before vLLM is imported."""
    if spec.device == "cpu":
        return {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            # In this process: a separate engine process's worker spins on its message queue for a second
            # after every call, taking a core from the trainers on a small machine.
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            # Eager mode still torch.compiles the sampler's logprob-rank count; on CPU that compile costs about
            # 4 s of the first generate per engine, more than the eager op costs in a whole run.
            "TORCHDYNAMO_DISABLE": "1",
        }
    env = {}
    if spec.weight_sync == "ipc":
        # On GPU the engine core is a process of its own and update_weights' arguments are msgpack-encoded;
        # CUDA IPC handles carry tensor and storage classes and a torch.dtype, which the encoder refuses without
        # this (vllm/v1/serial_utils.py; vLLM's examples/rl/rlhf_ipc.py sets it for the same reason).
        env["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    return env


def engine_kwargs(spec) -> dict:
    """Keyword arguments of `vllm.LLM` for this engine."""
    from rlsys.models.builders import resolve_dtype

    kwargs = dict(
        model=spec.model_path, dtype=str(resolve_dtype(spec.dtype, spec.device)).replace("torch.", ""),
        seed=spec.seed, max_model_len=spec.max_model_len, tensor_parallel_size=spec.tensor_parallel_size,
        gpu_memory_utilization=spec.gpu_memory_utilization, enforce_eager=spec.device == "cpu",
        enable_sleep_mode=spec.enable_sleep, worker_extension_cls="rlsys.actors.vllm_extension.WeightReceiver",
        logprobs_mode="processed_logprobs", enable_prefix_caching=False,
        # Per-request seeds make samples a function of (weights, prompt, seed): a resumed run draws exactly what
        # it would have. vLLM's CPU sampler cannot rewind a seeded generator when it discards the token of a
        # partial prefill chunk ("CPU Generator does not use offset"), so on CPU prefills are not chunked.
        enable_chunked_prefill=False if spec.device == "cpu" else None)
    if spec.tensor_parallel_size > 1:
        # Inside rlsys's placement group vLLM would pick its Ray executor, which refuses a bundle holding more
        # than one GPU (vllm/v1/executor/ray_utils.py). The engine actor already holds its tp GPUs: vLLM's own
        # worker processes use them.
        kwargs["distributed_executor_backend"] = "mp"
    if spec.weight_sync == "adapter":
        kwargs.update(enable_lora=True, max_loras=1,
                      max_lora_rank=next((r for r in LORA_RANKS if r >= spec.lora_rank), LORA_RANKS[-1]))
    if spec.weight_sync in ("nccl", "ipc"):
        kwargs["weight_transfer_config"] = {"backend": spec.weight_sync}
    return kwargs
