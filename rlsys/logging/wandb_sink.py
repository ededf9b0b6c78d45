"""wandb: config logged once, namespaced metrics each step, sample tables; a resumed run continues its run."""
from __future__ import annotations

import uuid
from pathlib import Path


class WandbSink:
    def __init__(self, output_dir: str, config: dict, settings, resume: bool):
        import wandb

        id_file = Path(output_dir) / "wandb_run_id"
        run_id = id_file.read_text().strip() if resume and id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self.run = wandb.init(project=settings.project, entity=settings.entity, name=settings.name,
                              tags=list(settings.tags), mode=settings.mode, dir=output_dir, config=config,
                              id=run_id, resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        import wandb

        columns = list(rows[0]) if rows else []
        self.run.log({"samples": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])}, step=step)

    def close(self) -> None:
        self.run.finish()
