"""The supervised controller shared by pretraining and SFT: only the data (packed text or chat) differs.

    each step: batch = the step's shuffled batch; metrics = policy.train(batch, "lm")
    streamed:  every rank takes its next sequences from its own stream; metrics = policy.train_stream(n)
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from rlsys.actors.cluster import check_capacity, connect, resolve_device
from rlsys.data.job_data import env_tools, pretrain_blocks, sft_examples
from rlsys.data.stream_plan import stream_plan, streams
from rlsys.envs import loading
from rlsys.errors import DataError
from rlsys.models.builders import load_tokenizer
from rlsys.trainers.common import Checkpoints, base_model_path, engine_settings, prepare_output_dir, start_train_group
from rlsys.trainers.evaluate import HeldOut
from rlsys.trainers.loop import run_steps


def batch_at(examples: list[dict], step: int, batch_size: int, seed: int, indices_only: bool = False):
    """The batch of a step, a pure function of (step, seed): a resumed run sees exactly what it would have."""
    per_epoch = len(examples) // batch_size
    epoch, offset = divmod(step - 1, per_epoch)
    order = list(range(len(examples)))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    picked = order[offset * batch_size:(offset + 1) * batch_size]
    if indices_only:
        return picked
    return {key: [examples[i][key] for i in picked] for key in examples[0]}


def mixture_shares(result: dict[str, float]) -> dict[str, float]:
    """data/<source>_share: each source's share of all tokens trained on so far (streamed mixtures)."""
    seen = {k.removeprefix("seen/"): v for k, v in result.items() if k.startswith("seen/")}
    total = sum(seen.values())
    return {f"data/{name}_share": n / total for name, n in seen.items()} if len(seen) > 1 and total else {}


def load_examples(cfg, tokenizer) -> list[dict]:
    if cfg.job == "pretrain":
        return [{"input_ids": block, "labels": block} for block in pretrain_blocks(cfg, tokenizer)]
    examples = sft_examples(cfg, tokenizer)
    if cfg.data.packing:  # several conversations per sequence, each with its own positions
        return [{"input_ids": ids, "labels": labels, "position_ids": positions} for ids, labels, positions in examples]
    return [{"input_ids": ids, "labels": labels} for ids, labels in examples]


class SupervisedController:
    def __init__(self, cfg):
        self.cfg = cfg
        self.out = prepare_output_dir(cfg)
        self.device = resolve_device(cfg.cluster)
        self.model_path = base_model_path(cfg)
        self.tokenizer = load_tokenizer(self.model_path)
        # streamed: the ranks read their data themselves, the driver holds the plan (file names, byte ranges)
        self.stream = stream_plan(cfg, self.model_path, env_tools(cfg)) if streams(cfg) else None
        self.examples = None if self.stream else load_examples(cfg, self.tokenizer)
        if self.examples is not None and len(self.examples) < cfg.trainer.batch_size:
            raise DataError(f"{len(self.examples)} training sequences are fewer than "
                            f"trainer.batch_size={cfg.trainer.batch_size}.")
        # pretraining's base model has no chat template to pose questions with
        self.held_out = HeldOut(cfg, self.tokenizer) if self.tokenizer.chat_template else None
        # tool SFT is evaluated as it will be used: in episodes against the environment
        self.episodes = None
        if cfg.job == "sft" and loading.enabled(cfg) and self.held_out:
            from rlsys.models.builders import end_of_turn_ids
            from rlsys.envs.episodes import episode_runner

            self.episodes = episode_runner(cfg, self.tokenizer, self.model_path, end_of_turn_ids(self.tokenizer))
        self.policy = None

    def start(self) -> None:
        cfg, ranks = self.cfg, self.cfg.cluster.policy
        data_cpus = self.stream.cpus_per_rank() if self.stream else 0.0
        connect(cfg.cluster, cpus_needed=ranks.num_ranks * (ranks.cpus_per_rank + data_cpus))
        check_capacity(self.device, ranks.num_ranks * ranks.gpus_per_rank)
        self.policy = start_train_group("policy", cfg, self.model_path, self.device, trainable=True,
                                        engine=engine_settings(cfg))
        if self.stream:
            self.policy.open_stream(self.stream)
        if self.episodes is not None:
            self.episodes.start(cfg.env.num_workers, cfg.env.cpus_per_worker)

    def stop(self) -> None:
        if self.policy is not None:
            self.policy.kill()
            self.policy = None
        if self.episodes is not None:
            self.episodes.stop()

    def restore(self, folder: Path) -> int:
        return Checkpoints.load(folder, {"policy": self.policy})["step"]

    def step(self, step: int) -> dict[str, float]:
        began = time.perf_counter()
        if self.stream:
            result = self.policy.train_stream(self.cfg.trainer.batch_size // self.policy.world_size, step)
            tokens = sum(v for k, v in result.items() if k.startswith("tokens/"))
        else:
            batch = batch_at(self.examples, step, self.cfg.trainer.batch_size, self.cfg.seed)
            result = self.policy.train(batch, "lm", {})
            tokens = sum(len(ids) for ids in batch["input_ids"])
        elapsed = time.perf_counter() - began
        return {"train/loss": result["loss"], "train/grad_norm": result["grad_norm"], "train/lr": result["lr"],
                "perf/step_s": elapsed, "perf/tokens_per_s": tokens / elapsed, **mixture_shares(result)}

    def evaluate(self, step: int) -> tuple[dict[str, float], list[dict]]:
        if not self.held_out:
            return {}, []
        max_new = self.cfg.rollout.max_new_tokens
        greedy = lambda prompts: self.policy.generate({"prompt_ids": prompts}, max_new)["response_ids"]
        if self.episodes is not None:
            return self.held_out.episodes(self.episodes, lambda prompts, seed: [{"response_ids": ids}
                                                                                for ids in greedy(prompts)])
        return self.held_out(greedy)

    def save(self, checkpoints: Checkpoints, step: int) -> None:
        checkpoints.save(step, {"policy": self.policy}, {"job": self.cfg.job})

    def finish(self) -> None:
        self.policy.save_hf(str(self.out / "checkpoints" / "final"))


def train(cfg) -> dict[str, float]:
    return run_steps(SupervisedController(cfg), cfg, cfg.job)
