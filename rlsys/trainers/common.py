"""What every controller does the same way: the run folder, the starting model, checkpoints, trainer groups."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import ray
from omegaconf import OmegaConf

from rlsys.actors.cluster import place_group
from rlsys.actors.group import ActorGroup
from rlsys.actors.train_worker import TrainWorker, WorkerSpec
from rlsys.errors import RlsysError


def prepare_output_dir(cfg) -> Path:
    out = Path(cfg.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise RlsysError(f"output_dir '{out}' is not writable ({err.strerror}). Choose another output_dir.") from None
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out


def base_model_path(cfg) -> str:
    """`model.path`, or a tiny model and tokenizer built (once) into output_dir/base_model."""
    if cfg.model.path:
        from rlsys.models.builders import check_model_dir

        check_model_dir(cfg.model.path)
        return cfg.model.path
    folder = Path(cfg.output_dir) / "base_model"
    if not (folder / "config.json").exists():
        from rlsys.data.job_data import embedded_task
        from rlsys.models.tiny import build_tiny_model

        task = embedded_task(cfg)
        texts = task.pretrain_texts("train")[:2000] + [str(c["messages"]) for c in task.sft_conversations("train")[:500]]
        texts += environment_texts(cfg, task)
        build_tiny_model(folder, arch=cfg.model.tiny.arch, hidden_size=cfg.model.tiny.hidden_size,
                         num_layers=cfg.model.tiny.num_layers, num_heads=cfg.model.tiny.num_heads,
                         intermediate_size=cfg.model.tiny.intermediate_size, seed=cfg.seed,
                         max_position_embeddings=max(512, cfg.data.max_length, cfg.env.max_total_tokens),
                         texts=texts, vocab_size=cfg.model.tiny.vocab_size)
    return str(folder)


def environment_texts(cfg, task) -> list[str]:
    """With an environment that demonstrates its tools, the tokenizer learns their text too (the tool schemas
    are in every prompt and would otherwise cost a token a character)."""
    from rlsys.data.job_data import demonstrations, env_tools
    from rlsys.models.tiny import render_template

    demonstrate, tools = demonstrations(cfg), env_tools(cfg)
    if demonstrate is None:
        return []
    return [render_template(demonstrate(row), tools) for row in task.rl_prompts("train")[:500]]


class Checkpoints:
    """checkpoints/step_N/ written atomically (temp folder, then rename), `latest` updated last."""

    def __init__(self, output_dir: str, keep_last: int):
        self.root = Path(output_dir) / "checkpoints"
        self.keep_last = keep_last
        self.root.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.exists():
            return None
        folder = self.root / pointer.read_text().strip()
        return folder if (folder / "trainer_state.json").exists() else None

    def resolve(self, resume) -> Path | None:
        if resume in (False, None, "false"):
            return None
        if resume == "auto":
            return self.latest()
        folder = Path(resume)
        if not (folder / "trainer_state.json").exists():
            raise RlsysError(f"resume={resume} is not an rlsys checkpoint (no trainer_state.json). Use resume=auto "
                             "or a checkpoints/step_N folder.")
        return folder

    def save(self, step: int, groups: dict[str, ActorGroup], state: dict, name: str | None = None) -> Path:
        """checkpoints/step_N, the new latest; or checkpoints/<name> (e.g. `best`), which moves neither."""
        final = self.root / (name or f"step_{step:06d}")
        tmp = self.root / f".tmp_{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            for role, group in groups.items():
                group.save_checkpoint(str(tmp / role))
            with open(tmp / "trainer_state.json", "w") as handle:
                json.dump({"step": step, **state}, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:  # a full disk, a quota, a read-only mount: the previous checkpoint is untouched
            shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
            raise RlsysError(f"could not save checkpoint {final.name} in {self.root} ({err.strerror or err}); {kept}. "
                             "Free disk space (or lower trainer.keep_last) and rerun with resume=auto.") from None
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if name:
            return final
        pointer_tmp = self.root / ".latest.tmp"
        pointer_tmp.write_text(final.name)
        pointer_tmp.replace(self.root / "latest")
        self._prune()
        return final

    def slot(self, name: str) -> "NamedSlot":
        return NamedSlot(self, name)

    def _prune(self) -> None:
        steps = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in steps[: max(0, len(steps) - self.keep_last)]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def load(folder: Path, groups: dict[str, ActorGroup]) -> dict:
        for name, group in groups.items():
            group.load_checkpoint(str(folder / name))
        return json.loads((folder / "trainer_state.json").read_text())


class NamedSlot:
    """A named checkpoint folder (`checkpoints/best`) that controllers save into like into Checkpoints."""

    def __init__(self, checkpoints: Checkpoints, name: str):
        self.checkpoints, self.name = checkpoints, name
        self.folder = checkpoints.root / name

    def save(self, step: int, groups: dict[str, ActorGroup], state: dict) -> Path:
        return self.checkpoints.save(step, groups, state, name=self.name)

    def exists(self) -> bool:
        return (self.folder / "trainer_state.json").exists()


def engine_settings(cfg, *, lr: float | None = None, warmup_steps: int | None = None) -> dict:
    t = cfg.trainer
    return dict(zero_stage=cfg.deepspeed.zero_stage, offload_optimizer=cfg.deepspeed.offload_optimizer,
                offload_params=cfg.deepspeed.offload_params, lr=lr or t.lr, min_lr_ratio=t.min_lr_ratio,
                lr_schedule=t.lr_schedule, warmup_steps=t.warmup_steps if warmup_steps is None else warmup_steps,
                total_steps=t.max_steps, weight_decay=t.weight_decay, grad_clip=t.grad_clip,
                adam_betas=tuple(t.adam_betas), adam_eps=t.adam_eps,
                max_tokens_per_micro_batch=t.max_tokens_per_micro_batch)


def start_train_group(role: str, cfg, model_path: str, device: str, *, trainable: bool, engine: dict,
                      placement=None, resources=None) -> ActorGroup:
    """A group of TrainWorkers forming one torch.distributed world (NCCL on GPU, gloo on CPU).

    Sized by `cluster.<role>` unless `resources` says otherwise (the trained model of rm is sized by cluster.policy).
    """
    resources = resources or cfg.cluster[role]
    placement = placement or place_group(role, resources, device, cfg.cluster)
    spec = WorkerSpec(role=role, model_path=model_path, device=device, dtype=cfg.model.dtype, trainable=trainable,
                      seed=cfg.seed, cpu_threads=max(1, int(resources.cpus_per_rank)), max_length=cfg.data.max_length,
                      gradient_checkpointing=cfg.model.gradient_checkpointing,
                      attn_implementation=cfg.model.attn_implementation,
                      lora=OmegaConf.to_object(cfg.model.lora) if role == "policy" else None, engine=engine,
                      reward_heads=cfg.algo.reward_heads if cfg.job == "rm" else 1)
    env = {"TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")} if device == "cuda" else {}
    group = ActorGroup(role, TrainWorker, placement, spec, env=env,
                       max_tokens_per_micro_batch=cfg.trainer.max_tokens_per_micro_batch)
    master_addr, master_port = ray.get(group.actors[0].node_address.remote())
    ray.get([actor.setup.remote(rank, group.world_size, master_addr, master_port)
             for rank, actor in enumerate(group.actors)])
    return group


def mean_metrics(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(m[k] for m in results) / len(results) for k in results[0]}
