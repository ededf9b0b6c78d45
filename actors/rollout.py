"""Rollout engines (vLLM, or transformers `generate`) as Ray actors, and the group that spreads prompts over them.

Both engines have the same small RPC surface: generate, prompt_logprobs, begin/receive/finish a weight
update, sleep/wake_up. Weights arrive as safetensors-encoded buckets through the object store; vLLM engines
also take a LoRA adapter, or weights over NCCL or CUDA IPC (actors/weight_sync.py).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlsys import watchdog
from rlsys.actors.engine_args import engine_env, engine_kwargs
from rlsys.actors.group import Placement, actor_location, release
from rlsys.logging.startup import CLOCK, ActorClock


@dataclass(frozen=True)
class RolloutSpec:
    model_path: str
    device: str
    dtype: str = "auto"
    seed: int = 0
    max_model_len: int = 512
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    enable_sleep: bool = False
    cpu_threads: int = 1
    weight_sync: str = "object_store"  # how new weights arrive: object_store | adapter | nccl | ipc
    lora_rank: int = 0  # adapter: the policy's LoRA rank


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 16
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)  # end-of-turn tokens besides EOS (end_of_turn_ids)


class VLLMEngine:
    def __init__(self, spec: RolloutSpec):
        self.clock = ActorClock()
        self.clock.lap("process")
        for name, value in engine_env(spec).items():  # also set by the actor's runtime env; kept if given
            os.environ.setdefault(name, value)
        from rlsys.models.builders import lean_transformers

        lean_transformers()
        import vllm

        self.clock.lap("imports")
        self.spec = spec
        self.adapter = None  # adapter sync: the LoRA request every generate carries
        self.adapter_dir = tempfile.TemporaryDirectory(prefix="rlsys-adapter-")
        self.llm = vllm.LLM(**engine_kwargs(spec))
        self.clock.lap("engine")

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling,
                 seeds: list[list[int]] | None = None) -> list[dict]:
        """n samples per prompt; sample j of prompt i is drawn with seeds[i][j] (None: the engine's own RNG).

        Each sample is a request of its own: with n > 1 vLLM seeds sample j with seed + j, which would make
        neighbouring prompts' samples share noise."""
        import vllm

        requests = [(ids, seeds[i][j] if seeds else None) for i, ids in enumerate(prompt_ids) for j in range(sampling.n)]
        params = [vllm.SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                      top_k=sampling.top_k, max_tokens=sampling.max_new_tokens,
                                      stop=list(sampling.stop) or None, logprobs=0, seed=seed,
                                      stop_token_ids=list(sampling.stop_token_ids) or None)
                  for _, seed in requests]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids, _ in requests], params, use_tqdm=False,
                                    lora_request=self.adapter)
        return [{"response_ids": list(c.token_ids),
                 "logp": [next(iter(lp.values())).logprob if lp else 0.0 for lp in (c.logprobs or [])],
                 "finish_reason": c.finish_reason}
                for out in outputs for c in out.outputs]

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """Log-probability of each token after the first, as the engine's current weights see it."""
        import vllm

        params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outputs = self.llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=False,
                                    lora_request=self.adapter)
        return [[lp[tok].logprob for lp, tok in zip(out.prompt_logprobs[1:], seq[1:])]
                for out, seq in zip(outputs, sequences)]

    def begin_weight_update(self) -> None:
        self.llm.collective_rpc("rlsys_begin_update")

    def receive_bucket(self, payload: bytes) -> None:
        self.llm.collective_rpc("rlsys_receive_bucket", args=(payload,))

    def finish_weight_update(self) -> None:
        self.llm.collective_rpc("rlsys_finish_update")
        self.llm.reset_prefix_cache()

    def load_adapter(self, files: dict[str, bytes]) -> None:
        """A new LoRA adapter version (PEFT's files): later requests carry it; the previous one is unloaded."""
        from vllm.lora.request import LoRARequest

        version = self.adapter.lora_int_id + 1 if self.adapter else 1
        folder = Path(self.adapter_dir.name) / f"v{version}"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        if self.adapter is not None:
            self.llm.llm_engine.remove_lora(self.adapter.lora_int_id)
            shutil.rmtree(self.adapter.lora_path, ignore_errors=True)
        self.adapter = LoRARequest(f"policy-v{version}", version, str(folder))
        self.llm.reset_prefix_cache()

    # vLLM's weight-transfer API (NCCL, CUDA IPC), driven by the trainer's sender
    def tensor_parallel_size(self) -> int:
        return self.spec.tensor_parallel_size

    def transfer_init(self, init_info: dict) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def transfer_start(self) -> None:
        self.llm.start_weight_update()

    def transfer_update(self, update_info) -> None:
        self.llm.update_weights({"update_info": update_info})

    def transfer_finish(self) -> None:
        self.llm.finish_weight_update()
        self.llm.reset_prefix_cache()

    def location(self) -> dict:
        return actor_location()

    def startup_times(self) -> dict[str, float]:
        return self.clock.report()

    def sleep(self) -> None:
        """Weights to host memory, KV cache freed (level 1): the trainers get the GPU."""
        if self.spec.enable_sleep:
            self.llm.sleep(level=1)

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Back on the GPU: `weights` first (to receive new ones), `kv_cache` once the transfer's buffers are
        freed; None: both."""
        if self.spec.enable_sleep:
            self.llm.wake_up(tags=tags)


class HFEngine:
    """transformers `generate`: for machines without vLLM, and the baseline vLLM is measured against."""

    def __init__(self, spec: RolloutSpec):
        self.clock = ActorClock()
        self.clock.lap("process")
        import torch

        from rlsys.models.builders import load_causal_lm, load_tokenizer, resolve_dtype

        if spec.device == "cpu":
            torch.set_num_threads(spec.cpu_threads)
        self.device = spec.device
        self.model = load_causal_lm(spec.model_path, dtype=resolve_dtype(spec.dtype, spec.device)).to(spec.device).eval()
        self.tokenizer = load_tokenizer(spec.model_path)
        self.pending: dict = {}
        self.clock.lap("model")

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling,
                 seeds: list[list[int]] | None = None) -> list[dict]:
        import torch

        from rlsys.data.collate import pad

        if seeds:
            torch.manual_seed(seeds[0][0])  # one batched generate: the chunk's first seed stands for all
        pad_id = self.tokenizer.pad_token_id
        stops = list(dict.fromkeys([self.tokenizer.eos_token_id, *sampling.stop_token_ids]))
        ids = pad(prompt_ids, pad_id, left=True).to(self.device)
        mask = pad([[1] * len(p) for p in prompt_ids], 0, left=True).to(self.device)
        greedy = sampling.temperature == 0
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=sampling.max_new_tokens, do_sample=not greedy,
                temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
                top_k=None if greedy or sampling.top_k < 0 else sampling.top_k, num_return_sequences=sampling.n,
                pad_token_id=pad_id, eos_token_id=stops, output_scores=True, return_dict_in_generate=True)
        steps = torch.stack(out.scores, dim=1).float().log_softmax(-1)  # processed scores, as vLLM reports them
        new_tokens = out.sequences[:, ids.shape[1]:]
        token_logp = steps.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        results = []
        for row, logp in zip(new_tokens.tolist(), token_logp.tolist()):
            end = first_stop(row, stops)
            stopped = row[end - 1] in stops if end else False
            results.append({"response_ids": row[:end], "logp": logp[:end], "finish_reason": "stop" if stopped else "length"})
        return results

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        import torch

        with torch.no_grad():
            result = []
            for seq in sequences:
                ids = torch.tensor([seq], device=self.device)
                logp = self.model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
                result.append(logp.gather(-1, ids[0, 1:, None]).squeeze(-1).tolist())
        return result

    def begin_weight_update(self) -> None:
        self.pending = {}

    def receive_bucket(self, payload: bytes) -> None:
        from safetensors.torch import load

        self.pending.update(load(payload))

    def finish_weight_update(self) -> None:
        missing, unexpected = self.model.load_state_dict(self.pending, strict=False)
        self.pending = {}
        if unexpected:
            raise RuntimeError(f"weight update carried unknown tensors: {unexpected[:5]}")

    def location(self) -> dict:
        return actor_location()

    def startup_times(self) -> dict[str, float]:
        return self.clock.report()

    def sleep(self) -> None:
        pass

    def wake_up(self, tags: list[str] | None = None) -> None:
        pass


ENGINES = {"vllm": VLLMEngine, "hf": HFEngine}


def first_stop(ids: list[int], stops: list[int]) -> int:
    """The length of a response cut after its first stop token (all of it when it has none)."""
    return next((i + 1 for i, token in enumerate(ids) if token in stops), len(ids))


def sample_seed(*parts: int) -> int:
    """A 31-bit seed that is a pure function of its parts; hashed, so neighbouring parts give unrelated seeds."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**31


class RolloutGroup:
    """Engines on their own devices; prompts go out in chunks to whichever engine is free (load-based).

    Every call into the engines has a deadline (`watchdog.*_s`): a hung engine stops the run with a line that
    names the call, never a silent wait."""

    def __init__(self, backend: str | type, spec: RolloutSpec, placement: Placement,
                 env: dict[str, str] | None = None, name: str = "rollout"):
        engine_cls = ENGINES[backend] if isinstance(backend, str) else backend  # a class: tests' stand-ins
        remote_cls = ray.remote(engine_cls)
        self.name = name  # the role, in start-up timings and the watchdog's messages
        self.placement = placement
        env = {**(engine_env(spec) if engine_cls is VLLMEngine else {}), **(env or {})}
        self.engines = [
            remote_cls.options(num_cpus=placement.num_cpus, num_gpus=placement.num_gpus,
                               runtime_env={"env_vars": env},
                               scheduling_strategy=PlacementGroupSchedulingStrategy(
                                   placement.group, placement_group_bundle_index=b)).remote(spec)
            for b in placement.bundle_indices
        ]

    def _all(self, method: str, *args, kind: str) -> list:
        """`method` on every engine, waited for up to the deadline of `kind`."""
        refs = [getattr(e, method).remote(*args) for e in self.engines]
        return watchdog.get(refs, role=f"{self.name} engines", call=f"{method}()", kind=kind)

    def wait_ready(self) -> None:
        """Engines start in the background; this returns once every one has loaded its model."""
        CLOCK.role(self.name, self._all("startup_times", kind="start_s"))

    def generate(self, prompt_ids: list[list[int]], sampling: Sampling, seed: int = 0) -> list[dict]:
        """n samples per prompt, in prompt order (the n samples of a prompt are contiguous).

        With several engines the prompts go out in twice as many chunks, each to whichever engine is free.
        Sample j of prompt i is drawn with sample_seed(seed, i, j): what is drawn does not depend on the
        engine that drew it or on the chunking."""
        count = len(prompt_ids)
        chunks = 1 if len(self.engines) == 1 else max(1, min(count, 2 * len(self.engines)))
        bounds = [count * c // chunks for c in range(chunks + 1)]
        results: list[list[dict] | None] = [None] * chunks
        idle = list(self.engines)
        running: dict = {}
        next_chunk = 0
        while next_chunk < chunks or running:
            while idle and next_chunk < chunks:
                engine = idle.pop()
                first, end = bounds[next_chunk], bounds[next_chunk + 1]
                seeds = [[sample_seed(seed, i, j) for j in range(sampling.n)] for i in range(first, end)]
                ref = engine.generate.remote(prompt_ids[first:end], sampling, seeds)
                running[ref] = (next_chunk, engine)
                next_chunk += 1
            done = watchdog.wait_one(list(running), role=f"{self.name} engines", call="generate()", kind="generate_s")
            index, engine = running.pop(done[0])
            results[index] = ray.get(done[0])
            idle.append(engine)
        return [sample for chunk in results for sample in chunk]

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[list[float]]]:
        """Each engine's view (for checking that a weight sync reached all of them)."""
        return self._all("prompt_logprobs", sequences, kind="forward_s")

    def locations(self) -> list[dict]:
        return self._all("location", kind="start_s")

    def sleep(self) -> None:
        self._all("sleep", kind="sync_s")

    def wake_up(self, tags: list[str] | None = None) -> None:
        self._all("wake_up", tags, kind="sync_s")

    def kill(self) -> None:
        for engine in self.engines:
            ray.kill(engine, no_restart=True)
        release(self.placement.group)
