"""The run folder a job writes into: its resolved config, and the starting model (built there when none is given)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

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
                         texts=texts, vocab_size=cfg.model.tiny.vocab_size, num_experts=cfg.model.tiny.num_experts,
                         experts_per_token=cfg.model.tiny.experts_per_token)
    return str(folder)


def environment_texts(cfg, task) -> list[str]:
    """With an environment that demonstrates its tools, the tokenizer learns their text too (the tool schemas
    are in every prompt and would otherwise cost a token a character)."""
    from rlsys.envs.loading import demonstrations, env_tools
    from rlsys.models.tiny import render_template

    demonstrate, tools = demonstrations(cfg), env_tools(cfg)
    if demonstrate is None:
        return []
    return [render_template(demonstrate(row), tools) for row in task.rl_prompts("train")[:500]]
