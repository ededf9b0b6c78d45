"""One rank of a training (or frozen inference) group: a model in the shared TrainEngine.

The same worker serves every role: policy and critic train, the reference only runs forward passes, a reward
model trains (`rlsys rm`) or scores sequences for RL.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlsys.actors.group import ALL, RANK0, SPLIT, actor_location, dispatch, free_port
from rlsys.actors.rollout import first_stop
from rlsys.actors.weight_sync import WeightSync, sender
from rlsys.config.losses import LanguageModelLoss, Loss
from rlsys.engine.batch import with_loss_weights
from rlsys.engine.engine import EngineSettings
from rlsys.logging.startup import ActorClock
from rlsys.models.builders import end_of_turn_ids

ROLE_MODEL = {"policy": "causal_lm", "reference": "causal_lm", "teacher": "causal_lm", "critic": "value",
              "reward": "reward"}


@dataclass(frozen=True)
class WorkerSpec:
    """One rank's model and engine, built from the config by rlsys.roles.train_group."""
    role: str  # policy | reference | teacher | critic | reward
    model_path: str
    device: str  # cpu | cuda
    trainable: bool
    seed: int
    cpu_threads: int
    max_length: int  # packed rows without varlen attention are at most this long
    gradient_checkpointing: bool
    attn_implementation: str | None
    lora: Any  # the policy's LoraConfig, else None
    reward_heads: int  # a reward model trained from a causal LM: its ensemble's heads
    engine: EngineSettings


def add_shares(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """Training metrics of all ranks: shares of the mini-batch mean add up; grad norm and lr are global."""
    return {k: per_rank[0][k] if k in ("grad_norm", "lr") else sum(m[k] for m in per_rank) for k in per_rank[0]}


class TrainWorker:
    def __init__(self, spec: WorkerSpec):
        self.clock = ActorClock()
        self.clock.lap("process")
        self.spec = spec
        self.rank = 0
        self.world_size = 1
        self.engine = None
        self.stream = None  # rlsys.data.stream.RankStream: this rank's own training data (streaming jobs)
        self.weight_senders: dict = {}  # (WeightSync, engines) -> its sender

    def node_address(self) -> tuple[str, int]:
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def location(self) -> dict:
        return actor_location()

    def startup_times(self) -> dict[str, float]:
        return self.clock.report()

    def setup(self, rank: int, world_size: int, address: tuple[str, int]) -> None:
        """Join the group's torch.distributed world (rank 0's `node_address`) and build the model in the engine."""
        spec = self.spec
        self.clock.lap("waiting")  # for rank 0's address
        self.rank, self.world_size = rank, world_size
        master_addr, master_port = address
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK="0")
        if spec.device == "cpu":
            os.environ["DS_ACCELERATOR"] = "cpu"
            torch.set_num_threads(spec.cpu_threads)
        else:
            torch.cuda.set_device(0)  # Ray gives each actor its own CUDA_VISIBLE_DEVICES
        import deepspeed

        from rlsys.engine.engine import TrainEngine
        from rlsys.models.builders import load_causal_lm, load_reward_model, load_tokenizer, load_value_model

        self.clock.lap("imports")
        if "LOCAL_SIZE" not in os.environ:
            # DeepSpeed's shared-memory all-reduce is for inference and needs LOCAL_SIZE; without it its op would
            # still be JIT-compiled (half a minute, once per machine and install) and loaded by every rank
            import importlib

            # (the module itself: deepspeed.comm's attribute `torch` is PyTorch)
            importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
        deepspeed.init_distributed(dist_backend="nccl" if spec.device == "cuda" else "gloo", verbose=False)
        self.clock.lap("distributed")
        self._seed_everything(spec.seed + rank)
        dtype = spec.engine.dtype
        self.tokenizer = load_tokenizer(spec.model_path)
        self.stop_ids = end_of_turn_ids(self.tokenizer)
        checkpointing = spec.gradient_checkpointing
        if ROLE_MODEL[spec.role] == "value":
            model = load_value_model(spec.model_path, dtype=dtype, gradient_checkpointing=checkpointing,
                                     attn_implementation=spec.attn_implementation)
        elif ROLE_MODEL[spec.role] == "reward":
            model = load_reward_model(spec.model_path, dtype=dtype, pad_token_id=self.tokenizer.pad_token_id,
                                      gradient_checkpointing=checkpointing, heads=spec.reward_heads)
        else:
            model = load_causal_lm(spec.model_path, dtype=dtype, gradient_checkpointing=checkpointing,
                                   attn_implementation=spec.attn_implementation,
                                   lora=spec.lora if spec.trainable else None)
        self.clock.lap("model")
        self.engine = TrainEngine(model, spec.engine, trainable=spec.trainable)
        self.clock.lap("engine")

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _tensors(self, batch: dict[str, list]):
        """(tensors on this rank's device, where each sample sits). Packed rows are as long as the token
        budget with varlen attention (flash), else data.max_length: dense attention masks grow with the row."""
        from rlsys.engine.batch import to_tensors

        varlen = str(getattr(self.engine.module.config, "_attn_implementation", "")).startswith("flash")
        tensors, layout = to_tensors(batch, self.tokenizer.pad_token_id, 0 if varlen else self.spec.max_length)
        return self._device(tensors), layout

    def _padded(self, batch: dict[str, list]):
        """(right-padded rows for a reward model, which pools each row's last token; how many rows are real).
        Without samples one padding row, so that under ZeRO-3 this rank still joins the forward pass."""
        from rlsys.engine.batch import pair_tensors, to_padded

        pad_id = self.tokenizer.pad_token_id
        if not batch["prompt_ids"]:
            return self._device(to_padded({"prompt_ids": [[pad_id]], "response_ids": [[]]}, pad_id)), 0
        if "chosen_ids" in batch:
            return self._device(pair_tensors(batch, pad_id)), 2 * len(batch["prompt_ids"])
        return self._device(to_padded(batch, pad_id)), len(batch["prompt_ids"])

    def _device(self, tensors: dict) -> dict:
        return {k: v.to(self.spec.device) for k, v in tensors.items()}

    # ---- training ---------------------------------------------------------------------------------------
    @dispatch(SPLIT, prepare=with_loss_weights, gather=add_shares, deadline="train_s")
    def train(self, micro_batches: list[dict[str, list]], loss: Loss) -> dict[str, float]:
        """One optimizer step on this rank's micro-batches; returns this rank's shares of the metrics."""
        from rlsys.engine.objectives import objective_for

        chunks = [self._tensors(mb)[0] for mb in micro_batches]
        return self.engine.train_step(chunks, objective_for(loss))

    # ---- streamed data ---------------------------------------------------------------------------------
    @dispatch(ALL)
    def open_stream(self, plan) -> None:
        """Read training data on this rank (rlsys/data/stream.py): its share of every source, from the start or
        from the position a loaded checkpoint recorded."""
        from rlsys.data.stream import RankStream

        self.stream = RankStream(plan, self.rank, self.world_size)

    @dispatch(ALL, gather=add_shares, deadline="train_s")
    def train_stream(self, count: int, step: int) -> dict[str, float]:
        """One optimizer step on this rank's next `count` sequences; this rank's metric shares, the tokens each
        source gave (`tokens/<source>`) and has given since the run began (`seen/<source>`)."""
        from rlsys.engine.batch import loss_tokens, plan_micro_batches, sample_lengths, select
        from rlsys.engine.objectives import objective_for
        from rlsys.errors import DataExhausted

        try:
            batch, tokens = self.stream.take(count)
        except DataExhausted:
            self._all_ranks([1.0, 0.0, 0.0])  # the other ranks learn it in the same collective, and stop too
            raise
        plan = plan_micro_batches(sample_lengths(batch), 1, self.spec.engine.max_tokens_per_micro_batch)[0]
        everyone = self._all_ranks([0.0, float(sum(loss_tokens(batch))), float(len(plan))])
        if any(ran_out for ran_out, _, _ in everyone):
            raise DataExhausted(f"the data ran out on another rank at step {step}: every source has been read as "
                                "many times as its epochs allow.")
        if self.stream.plan.trace_dir:
            self._trace(step, batch)
        # loss weights make the sum over all ranks the mean over all their tokens; every rank runs as many
        # micro-batches as the busiest one (ZeRO-3 collectives)
        total, most = sum(t for _, t, _ in everyone), int(max(n for _, _, n in everyone))
        weighted = {**batch, "loss_weight": [1.0 / max(1.0, total)] * len(batch["input_ids"])}
        micro_batches = [select(weighted, micro) for micro in plan] + [select(weighted, [])] * (most - len(plan))
        chunks = [self._tensors(mb)[0] for mb in micro_batches]
        metrics = self.engine.train_step(chunks, objective_for(LanguageModelLoss()))
        seen = {name: float(p["tokens"]) for name, p in self.stream.position().items()}
        return {**metrics, **{f"tokens/{name}": float(n) for name, n in tokens.items()},
                **{f"seen/{name}": n for name, n in seen.items()}}

    def _all_ranks(self, values: list[float]) -> list[list[float]]:
        """Every rank's `values` (a small all-gather over the group's process group)."""
        import torch.distributed as dist

        mine = torch.tensor(values, dtype=torch.float64)
        everyone = [torch.zeros_like(mine) for _ in range(self.world_size)]
        dist.all_gather(everyone, mine)
        return [t.tolist() for t in everyone]

    def _trace(self, step: int, batch: dict[str, list]) -> None:
        """A checksum of every sequence this rank trains on (data.stream.trace): token streams compared."""
        import json
        import zlib

        sums = [zlib.crc32(np.asarray(ids, dtype=np.int32).tobytes()) for ids in batch["input_ids"]]
        with open(Path(self.stream.plan.trace_dir) / f"rank{self.rank}.jsonl", "a") as handle:
            handle.write(json.dumps({"step": step, "sequences": sums}) + "\n")

    # ---- inference --------------------------------------------------------------------------------------
    def _forward_each(self, micro_batches: list[dict[str, list]], compute, to_tensors=None) -> list:
        """compute(model, tensors, layout) on each micro-batch without gradients; the results concatenated.
        Tensors are packed (`_tensors`) unless `to_tensors` says otherwise."""
        model = self.engine.engine or self.engine.module
        self.engine.module.eval()
        out: list = []
        with torch.no_grad():
            for mb in micro_batches:
                tensors, layout = (to_tensors or self._tensors)(mb)
                out.extend(compute(model, tensors, layout))
        return out

    @dispatch(SPLIT)
    def logprobs(self, micro_batches: list[dict[str, list]], temperature: float = 1.0) -> dict[str, list]:
        """Per-token log-probabilities of each response under this model."""
        from rlsys.engine.batch import response_values
        from rlsys.engine.objectives import response_logprobs

        compute = lambda model, t, layout: response_values(response_logprobs(model, t, temperature)[0], layout)
        return {"logp": self._forward_each(micro_batches, compute)}

    @dispatch(SPLIT)
    def values(self, micro_batches: list[dict[str, list]]) -> dict[str, list]:
        """The critic's value of the state before each response token."""
        from rlsys.engine.batch import response_values
        from rlsys.engine.objectives import model_inputs

        compute = lambda model, t, layout: response_values(model(**model_inputs(t)).logits[:, :-1, 0], layout)
        return {"values": self._forward_each(micro_batches, compute)}

    @dispatch(SPLIT)
    def scores(self, micro_batches: list[dict[str, list]]) -> dict[str, list]:
        """A reward model's scores of each sequence (prompt + response, or a preference pair's two sides): one per
        head, so an ensemble's heads can be combined by the caller."""
        from rlsys.engine.objectives import sequence_scores

        compute = lambda model, tensors, rows: sequence_scores(model, tensors).tolist()[:rows]
        return {"scores": self._forward_each(micro_batches, compute, to_tensors=self._padded)}

    @dispatch(SPLIT)
    def generate(self, micro_batches: list[dict[str, list]], max_new_tokens: int) -> dict[str, list]:
        """Greedy completions with transformers (evaluation inside supervised jobs)."""
        from rlsys.data.collate import pad

        module = self.engine.module
        module.eval()
        prompts = [p for mb in micro_batches for p in mb["prompt_ids"]]
        if not prompts and not self.engine.zero3:
            return {"response_ids": []}
        count = len(prompts)
        prompts = prompts or [[self.tokenizer.pad_token_id]]  # ZeRO-3: every rank must join the forward passes
        ids = pad(prompts, self.tokenizer.pad_token_id, left=True).to(self.spec.device)
        mask = pad([[1] * len(p) for p in prompts], 0, left=True).to(self.spec.device)
        stops = self.stop_ids
        with torch.no_grad():
            out = module.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=stops,
                                  synced_gpus=self.engine.zero3)
        responses = [row[:first_stop(row, stops)] for row in out[:, ids.shape[1]:].tolist()]
        return {"response_ids": responses[:count]}

    # ---- weights and checkpoints ------------------------------------------------------------------------
    @dispatch(RANK0, deadline="train_s")
    def save_hf(self, folder: str) -> str:
        """A Hugging Face folder (config, safetensors, tokenizer with its chat template); LoRA merged in."""
        from rlsys.engine.weights import base_model, full_state_dict

        # ZeRO-3 shards must be gathered on every rank; otherwise rank 0 alone builds the state dict
        if self.engine.zero3 or self.rank == 0:
            state = full_state_dict(self.engine.module, self.engine.zero3)
        if self.rank == 0:
            model = base_model(self.engine.module)
            model.save_pretrained(folder, state_dict=state)
            self.tokenizer.save_pretrained(folder)
            getattr(model, "generation_config", None) and model.generation_config.save_pretrained(folder)
        return folder

    # ---- colocation: the GPU handed to the rollout engines and back (rlsys/roles/handoff.py) -----------------
    @dispatch(ALL, deadline="sync_s")
    def offload_states(self) -> bool:
        return self.engine.offload_states()

    @dispatch(ALL, deadline="sync_s")
    def reload_states(self) -> None:
        self.engine.reload_states()

    @dispatch(ALL, deadline="sync_s")
    def empty_cache(self) -> None:
        """The allocator's cached blocks (a transfer's buffers) back to the device, for the engines' KV cache."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @dispatch(RANK0, deadline="sync_s")
    def send_weights(self, engines: list, sync: WeightSync) -> dict[str, float]:
        """The current weights to the rollout engines, by `sync.kind` (actors/weight_sync.py). NCCL and IPC
        senders keep their connection for the engines they were opened to."""
        key = (sync, tuple(e._actor_id.hex() for e in engines))
        if key not in self.weight_senders:
            self.weight_senders[key] = sender(sync, engines, self.rank)
        return self.weight_senders[key].send(self.engine.module, self.engine.zero3)

    @dispatch(ALL, deadline="train_s")
    def save_checkpoint(self, folder: str) -> None:
        """Model, optimizer and scheduler (DeepSpeed, sharded per rank), this rank's RNG states and, when it streams
        its data, its position in every source."""
        import json

        self.engine.save_checkpoint(folder)
        torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
                   Path(folder) / f"rng_rank{self.rank}.pt")
        if self.stream is not None:
            position = {"world_size": self.world_size, "sources": self.stream.position()}
            (Path(folder) / f"data_rank{self.rank}.json").write_text(json.dumps(position))

    @dispatch(ALL, deadline="train_s")
    def load_checkpoint(self, folder: str) -> None:
        self.engine.load_checkpoint(folder)
        rng = torch.load(Path(folder) / f"rng_rank{self.rank}.pt", weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if self.stream is not None:
            self._restore_stream(Path(folder) / f"data_rank{self.rank}.json")

    def _restore_stream(self, path: Path) -> None:
        import json

        from rlsys.data.stream import RankStream
        from rlsys.errors import DataError

        if not path.exists():
            raise DataError(f"checkpoint {path.parent.parent.name} holds no data position for rank {self.rank} (it was "
                            "not written by a streaming run). Resume it with data.streaming=false.")
        saved = json.loads(path.read_text())
        if saved["world_size"] != self.world_size:
            raise DataError(f"checkpoint {path.parent.parent.name} streamed data on {saved['world_size']} ranks; "
                            f"resume it on as many (cluster.policy.num_ranks={saved['world_size']}).")
        self.stream = RankStream(self.stream.plan, self.rank, self.world_size, saved["sources"])
