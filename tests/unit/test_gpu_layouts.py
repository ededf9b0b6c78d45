"""The GPU layouts, checked on CPU: what each engine is created with, the refusals of layouts that cannot work,
the transfer buffers' sizes, and the order in which colocated trainers and engines hand the GPU over."""
import pytest
import torch

from rlsys.actors.engine_args import engine_env, engine_kwargs
from rlsys.actors.weight_sync import nccl_init_infos, problem, resolve, transfer_buffer_bytes
from rlsys.config.compose import compose_job
from rlsys.config.validate import to_typed
from rlsys.errors import ConfigError
from rlsys.roles.engines import rollout_spec
from rlsys.roles.handoff import DeviceHandoff


def job(name: str, *overrides: str):
    return to_typed(compose_job(name, list(overrides)))


def engine_for(*overrides: str, device: str = "cuda"):
    """The spec a policy engine actor receives (as rlsys/roles/rl_actors.py builds it), its vLLM arguments and
    its environment."""
    cfg = job("grpo", *overrides)
    spec = rollout_spec(cfg, "/models/policy", device, cfg.cluster.colocate, weight_sync=resolve(cfg, device))
    return spec, engine_kwargs(spec), engine_env(spec)


def test_cpu_engine_runs_eagerly_in_process_with_unchunked_prefills():
    spec, kwargs, env = engine_for(device="cpu")
    assert spec.weight_sync == "object_store" and kwargs["enforce_eager"] and kwargs["enable_chunked_prefill"] is False
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and "weight_transfer_config" not in kwargs
    assert kwargs["dtype"] == "float32" and not kwargs["enable_sleep_mode"]


def test_separate_gpus_take_weights_over_nccl():
    spec, kwargs, env = engine_for()
    assert kwargs["weight_transfer_config"] == {"backend": "nccl"}
    assert not kwargs["enable_sleep_mode"] and kwargs["dtype"] == "bfloat16" and not kwargs["enforce_eager"]
    assert "distributed_executor_backend" not in kwargs and "VLLM_ALLOW_INSECURE_SERIALIZATION" not in env


def test_colocated_engine_sleeps_and_may_decode_cuda_ipc_handles():
    spec, kwargs, env = engine_for("cluster.colocate=true", "rollout.num_engines=1")
    assert kwargs["weight_transfer_config"] == {"backend": "ipc"} and kwargs["enable_sleep_mode"]
    # the engine core's msgpack encoder refuses the handles' tensor classes and dtype without it
    assert env["VLLM_ALLOW_INSECURE_SERIALIZATION"] == "1"


def test_tensor_parallel_engine_uses_its_own_worker_processes():
    spec, kwargs, env = engine_for("rollout.tensor_parallel_size=2")
    # vLLM's Ray executor would refuse rlsys's bundle of two GPUs
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["distributed_executor_backend"] == "mp"


def test_lora_adapter_engine_compiles_for_the_next_supported_rank():
    spec, kwargs, env = engine_for("model.lora.enabled=true", "model.lora.r=12")
    assert spec.weight_sync == "adapter" and kwargs["enable_lora"] and kwargs["max_lora_rank"] == 16


@pytest.mark.parametrize("job_name, overrides, expected", [
    ("grpo", ("cluster.colocate=true", "rollout.num_engines=1", "rollout.tensor_parallel_size=2"),
     "rollout.tensor_parallel_size=2 spreads an engine over several GPUs"),
    ("grpo", ("cluster.colocate=true",), "rollout.num_engines=2 colocated engines would share 1 policy device"),
    ("ppo", ("cluster.colocate=true", "cluster.policy.num_ranks=2", "rollout.num_engines=3"),
     "at most cluster.policy.num_ranks (2)"),
])
def test_colocated_layouts_that_cannot_start_are_refused_in_one_line(job_name, overrides, expected):
    with pytest.raises(ConfigError) as refused:
        job(job_name, *overrides)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("job_name, overrides, colocated, expected", [
    ("grpo", ("cluster.colocate=true", "rollout.num_engines=1", "rollout.weight_sync=nccl"), None, "Duplicate GPU"),
    # online DPO samples on engines of their own, whatever cluster.colocate says
    ("dpo", ("cluster.colocate=true", "rollout.weight_sync=ipc"), False, "puts its engines on GPUs of their own"),
])
def test_transports_that_cannot_reach_the_engines_are_refused(job_name, overrides, colocated, expected):
    message = problem(job(job_name, *overrides), "cuda", colocated)
    assert expected in message and "\n" not in message


def test_online_dpo_picks_nccl_even_when_the_cluster_colocates():
    assert resolve(job("dpo", "cluster.colocate=true"), "cuda", colocated=False) == "nccl"


def test_ipc_refuses_expandable_segments(monkeypatch):
    cfg = job("grpo", "cluster.colocate=true", "rollout.num_engines=1")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert "unset it" in problem(cfg, "cuda")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    assert problem(cfg, "cuda") is None


def test_transfer_buffer_holds_the_largest_weight_and_both_sides_agree():
    qwen7b_embedding = 152064 * 3584 * 2  # bf16: 1.09 GB, past vLLM's fixed 1 GiB
    assert transfer_buffer_bytes(64 * 2**20, qwen7b_embedding) == qwen7b_embedding
    assert transfer_buffer_bytes(64 * 2**20, 2**20) == 64 * 2**20  # rollout.weight_sync_bucket_mb is honoured
    trainer, workers = nccl_init_infos("10.0.0.1", 29500, num_engines=3, tp=2, buffer_bytes=qwen7b_embedding)
    assert trainer["world_size"] == 7 and [w["rank_offset"] for w in workers] == [1, 3, 5]
    for worker in workers:
        for key in ("packed", "packed_buffer_size_bytes", "packed_num_buffers", "world_size", "master_port"):
            assert worker[key] == trainer[key], key
    assert trainer["packed_buffer_size_bytes"] == qwen7b_embedding


class Recorder:
    """A stand-in for a trainer group or the engines: every call is logged, in order, into one shared list."""

    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def __getattr__(self, method: str):
        return lambda *args: self.log.append(f"{self.name}.{method}{'(' + ','.join(args[0]) + ')' if args and args[0] else ''}")


def handoff(log: list) -> DeviceHandoff:
    return DeviceHandoff([Recorder("policy", log), Recorder("critic", log)], Recorder("engines", log), colocated=True)


def test_colocated_sync_offloads_trainers_wakes_weights_syncs_then_wakes_the_cache():
    log: list = []
    shared = handoff(log)
    shared.to_trainers()  # the first step trains
    shared.to_engines(lambda: log.append("send") or {"sync_mb": 1.0})
    assert log == ["engines.sleep", "policy.reload_states", "critic.reload_states",
                   "policy.offload_states", "critic.offload_states", "engines.wake_up(weights)", "send",
                   "policy.empty_cache", "engines.wake_up(kv_cache)"]


def test_engines_keep_the_devices_until_the_trainers_need_them():
    log: list = []
    shared = handoff(log)
    shared.to_trainers()
    log.clear()
    for _ in range(3):  # an episode's turns, or dynamic sampling's rounds
        shared.to_engines()
    assert log == ["policy.offload_states", "critic.offload_states", "engines.wake_up"]
    shared.to_trainers()
    shared.to_trainers()
    assert log[3:] == ["engines.sleep", "policy.reload_states", "critic.reload_states"]


def test_restoring_while_the_trainers_hold_the_gpu_wakes_the_engines_first():
    """A mid-run restore (the gold stop's best step) finds the engines asleep: they wake before taking weights."""
    log: list = []
    shared = handoff(log)
    shared.to_trainers()
    log.clear()
    shared.to_engines(lambda: log.append("send") or {})
    assert log.index("engines.wake_up(weights)") < log.index("send") < log.index("engines.wake_up(kv_cache)")


def test_separate_devices_only_sync():
    log: list = []
    shared = DeviceHandoff([Recorder("policy", log)], Recorder("engines", log), colocated=False)
    shared.to_trainers()
    assert shared.to_engines(lambda: log.append("send") or {"sync_mb": 2.0}) == {"sync_mb": 2.0}
    assert log == ["send"]


def tiny_causal_lm(tie: bool = True):
    import transformers

    config = transformers.Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
    torch.manual_seed(0)
    return transformers.Qwen2ForCausalLM(config)


def test_weight_metadata_matches_the_weights_without_gathering_them():
    from rlsys.engine.weights import hf_weight_meta, iter_hf_weights, largest_weight_bytes

    model = tiny_causal_lm()
    weights = list(iter_hf_weights(model))
    assert [(n, t.dtype, tuple(t.shape)) for n, t in weights] == hf_weight_meta(model)
    assert {"model.embed_tokens.weight", "lm_head.weight"} <= {n for n, _ in weights}  # tied: under both names
    assert largest_weight_bytes(model) == 64 * 16 * 4


def test_lora_weights_are_merged_one_layer_at_a_time_as_peft_merges_them():
    import peft

    from rlsys.engine.weights import hf_weight_meta, iter_hf_weights

    model = peft.get_peft_model(tiny_causal_lm(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter a delta to merge
            torch.nn.init.normal_(param, std=0.1)
    ours = dict(iter_hf_weights(model))
    assert list(ours) == [name for name, _, _ in hf_weight_meta(model)]
    expected = model.merge_and_unload().state_dict()
    assert set(ours) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(ours[name], tensor, msg=name)
    assert not torch.equal(ours["model.layers.0.self_attn.q_proj.weight"],
                           tiny_causal_lm().state_dict()["model.layers.0.self_attn.q_proj.weight"])
