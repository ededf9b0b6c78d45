"""The supervised controller shared by pretraining and SFT: only the data (packed text or chat) differs.

    each step: batch = the step's shuffled batch; metrics = policy.train(batch, LanguageModelLoss())
    streamed:  every rank takes its next sequences from its own stream; metrics = policy.train_stream(n)
"""
from __future__ import annotations

import time
from pathlib import Path

from rlsys.actors.cluster import reserve, resolve_device
from rlsys.config.jobs import streams, uses_environment
from rlsys.config.losses import LanguageModelLoss
from rlsys.data.batching import batch_at, require_batch
from rlsys.data.job_data import pretrain_blocks, sft_examples
from rlsys.data.stream_plan import stream_plan
from rlsys.engine.moe import ROUTER_METRICS
from rlsys.envs import loading
from rlsys.loop.checkpoints import Checkpoints
from rlsys.loop.run_folder import base_model_path, prepare_output_dir
from rlsys.loop.steps import run_steps
from rlsys.models.builders import load_tokenizer
from rlsys.roles.train_group import start_train_group
from rlsys.trainers.held_out import HeldOut


def mixture_shares(result: dict[str, float]) -> dict[str, float]:
    """data/<source>_share: each source's share of all tokens trained on so far (streamed mixtures)."""
    seen = {k.removeprefix("seen/"): v for k, v in result.items() if k.startswith("seen/")}
    total = sum(seen.values())
    return {f"data/{name}_share": n / total for name, n in seen.items()} if len(seen) > 1 and total else {}


def load_examples(cfg, tokenizer) -> list[dict]:
    demonstrate = loading.demonstrations(cfg)
    if cfg.job == "pretrain":
        return [{"input_ids": block, "labels": block} for block in pretrain_blocks(cfg, tokenizer, demonstrate)]
    examples = sft_examples(cfg, tokenizer, loading.env_tools(cfg), demonstrate)
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
        self.stream = stream_plan(cfg, self.model_path, loading.env_tools(cfg)) if streams(cfg) else None
        self.examples = None if self.stream else load_examples(cfg, self.tokenizer)
        if self.examples is not None:
            require_batch(len(self.examples), cfg.trainer.batch_size, "training sequences")
        # pretraining's base model has no chat template to pose questions with
        self.held_out = HeldOut(cfg, self.tokenizer) if self.tokenizer.chat_template else None
        # tool SFT is evaluated as it will be used: in episodes against the environment
        self.episodes = None
        if cfg.job == "sft" and uses_environment(cfg) and self.held_out:
            from rlsys.models.builders import end_of_turn_ids
            from rlsys.rollouts.episodes import episode_runner

            self.episodes = episode_runner(cfg, self.tokenizer, self.model_path, end_of_turn_ids(self.tokenizer))
        self.policy = None

    def start(self) -> None:
        cfg = self.cfg
        reserve(cfg, self.device)
        self.policy = start_train_group("policy", cfg, self.model_path, self.device, trainable=True)
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
            result = self.policy.train(batch, LanguageModelLoss())
            tokens = sum(len(ids) for ids in batch["input_ids"])
        elapsed = time.perf_counter() - began
        return {"train/loss": result["loss"], "train/grad_norm": result["grad_norm"], "train/lr": result["lr"],
                "perf/step_s": elapsed, "perf/tokens_per_s": tokens / elapsed, **mixture_shares(result),
                **{f"train/{k}": result[k] for k in ROUTER_METRICS if k in result}}

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
