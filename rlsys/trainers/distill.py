"""`rlsys distill`: a teacher writes the SFT data, then the student (model.path) learns it, in one command.
(distill.on_policy=true runs the RL controller instead: rlsys/trainers/rl.py, rlsys/algorithms/distillation.py.)

    answers = teacher.generate(prompts, n)                vLLM engines serving distill.teacher
    scores  = reward(prompts, answers, columns)           rules, functions, reward models, remote
    kept    = the best answer of each prompt (or all)     rejection sampling: distill.keep, distill.min_reward
    output_dir/distilled.jsonl                            chat rows: messages, reward
    student = sft(model.path, data.train=distilled.jsonl) the SFT controller, in output_dir (resume=auto skips
                                                          the teacher when the dataset is already written)
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from omegaconf import open_dict

from rlsys.actors.cluster import reserve, resolve_device
from rlsys.actors.rollout import Sampling
from rlsys.data.collate import render_ids
from rlsys.data.job_data import prompt_rows
from rlsys.errors import DataError, RlsysError
from rlsys.loop.run_folder import prepare_output_dir
from rlsys.models.builders import check_model_dir, end_of_turn_ids, load_tokenizer
from rlsys.rewards import build_reward
from rlsys.roles.engines import start_engines
from rlsys.roles.reward_actors import RewardActors, actor_terms, reward_specs, start_reward_actors

DATASET = "distilled.jsonl"
CHUNK = 256  # prompts per generation call: progress and ETA between calls


def select(scores: list[float], answers: list[str], keep: str, min_reward: float | None) -> list[int]:
    """Indices of the answers to keep among one prompt's samples (distinct answers only)."""
    passing = [i for i, s in enumerate(scores) if min_reward is None or s >= min_reward]
    ranked = sorted(passing, key=lambda i: -scores[i])  # stable: ties keep sampling order
    chosen, seen = [], set()
    for i in ranked:
        if answers[i].strip() and answers[i] not in seen:
            chosen.append(i)
            seen.add(answers[i])
    return chosen[:1] if keep == "best" else chosen


def write_dataset(cfg, path: Path) -> dict[str, float]:
    """Generate with the teacher, score, select; write the kept rows atomically; return the funnel's figures."""
    d = cfg.distill
    check_model_dir(d.teacher)
    if any(t.type == "judge" for t in cfg.reward):
        raise RlsysError("distill scores answers with rules, functions, reward models or a remote reward, not a "
                         "judge: remove the judge term.")
    specs = reward_specs(cfg)
    build_reward(specs)  # every term checked before any actor starts
    rows = prompt_rows(cfg, "train")
    tokenizer = load_tokenizer(d.teacher)
    prompts = [render_ids(tokenizer, r["messages"], add_generation_prompt=True) for r in rows]
    device = resolve_device(cfg.cluster)
    reserve(cfg, device)
    actors = RewardActors()
    teacher = None
    try:
        teacher = start_engines(cfg, d.teacher, device, cfg.rollout.num_engines)
        start_reward_actors(cfg, device, actors, judge_engines=None)
        reward = build_reward(specs, actor_term=actor_terms(cfg, actors))
        sampling = Sampling(n=d.n_samples, temperature=d.temperature, top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                            max_new_tokens=cfg.rollout.max_new_tokens, stop=list(cfg.rollout.stop),
                            stop_token_ids=end_of_turn_ids(tokenizer))
        kept, scored, began = [], [], time.perf_counter()
        for start in range(0, len(rows), CHUNK):
            batch, ids = rows[start:start + CHUNK], prompts[start:start + CHUNK]
            generated = teacher.generate(ids, sampling, seed=cfg.seed + start)
            answers = tokenizer.batch_decode([g["response_ids"] for g in generated], skip_special_tokens=True)
            n = d.n_samples
            columns = {k: [r.get(k) for r in batch for _ in range(n)] for k in batch[0] if k != "messages"}
            scores, _ = reward([r["messages"][-1]["content"] for r in batch for _ in range(n)], answers, columns,
                               messages=[r["messages"] for r in batch for _ in range(n)])
            for i, row in enumerate(batch):
                own_scores, own_answers = list(scores[i * n:(i + 1) * n]), answers[i * n:(i + 1) * n]
                scored.extend(own_scores)
                for j in select(own_scores, own_answers, d.keep, d.min_reward):
                    kept.append({"messages": row["messages"] + [{"role": "assistant", "content": own_answers[j]}],
                                 "reward": own_scores[j]})
            done = min(start + CHUNK, len(rows))
            elapsed = time.perf_counter() - began
            print(f"[distill] teacher answered {done}/{len(rows)} prompts, kept {len(kept)} answers, "
                  f"eta {elapsed / done * (len(rows) - done):.0f}s", flush=True)
    finally:
        if teacher is not None:
            teacher.kill()
        actors.kill()
    if not kept:
        raise DataError(f"the teacher's answers kept none of {len(rows)} prompts (distill.min_reward="
                        f"{d.min_reward}). Lower distill.min_reward, raise distill.n_samples, or use a stronger teacher.")
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        for row in kept:
            handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return {"prompts": len(rows), "answers": len(scored), "kept": len(kept),
            "prompts_kept": len({json.dumps(r["messages"][:-1]) for r in kept}),
            "reward_mean": sum(scored) / len(scored), "kept_reward_mean": sum(r["reward"] for r in kept) / len(kept)}


def run(cfg) -> dict[str, float]:
    from rlsys.trainers import rl, supervised

    if not cfg.distill.teacher:
        raise RlsysError("distill needs a teacher: distill.teacher=PATH (a Hugging Face model folder; on-policy, one "
                         "that shares the student's tokenizer).")
    if cfg.distill.on_policy:  # the student samples, the teacher grades each token: the RL controller's loop
        return rl.train(cfg)
    out = prepare_output_dir(cfg)
    dataset = out / DATASET
    if cfg.resume == "auto" and dataset.exists():
        print(f"[distill] reusing {dataset} (resume=auto)", flush=True)
    else:
        funnel = write_dataset(cfg, dataset)
        (out / "distill_summary.json").write_text(json.dumps(funnel, indent=2) + "\n")
        print(f"[distill] {funnel['kept']} answers for {funnel['prompts_kept']} of {funnel['prompts']} prompts "
              f"-> {dataset}", flush=True)
    student = cfg.copy()  # the same job, trained by the SFT controller on the distilled rows
    with open_dict(student):
        student.data.train = str(dataset)
        student.data.eval = held_out_file(cfg, out)
        student.data.columns = {name: name for name in student.data.columns}  # the files use rlsys's names
    return supervised.train(student)


def held_out_file(cfg, out: Path) -> str | None:
    """The prompts' evaluation rows in rlsys's column names, for the student (whose data.train is the distilled
    file): data.eval, or the embedded held-out split when the prompts are the embedded task's."""
    if not cfg.data.eval and cfg.data.train:
        return None
    path = out / "heldout.jsonl"
    with open(path, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in prompt_rows(cfg, "eval"))
    return str(path)
