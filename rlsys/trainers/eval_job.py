"""`rlsys eval`: checkpoints scored on held-out rows by reward terms, and compared with a reference by a judge.

    for model in eval.models (or model.path):   vLLM engines serving it answer data.eval greedily
        metrics[model] = rewards(answers)       eval/reward, eval/<term> (rules, functions, reward models,
                                                judges), eval/accuracy where the rows carry an answer
    if eval.against:                            the reference answers too; judge.model compares each pair in
        pairwise[model] = judge(answers, ref)   both orders (rlsys/rewards/pairwise.py): win / tie / loss rates
    output_dir/eval.json, output_dir/eval_samples.jsonl, and a table on the terminal
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import open_dict

from rlsys.actors.cluster import reserve, resolve_device
from rlsys.actors.rollout import Sampling
from rlsys.errors import RlsysError
from rlsys.loop.run_folder import base_model_path, prepare_output_dir
from rlsys.models.builders import check_model_dir, end_of_turn_ids, load_tokenizer
from rlsys.rewards import build_reward
from rlsys.rewards.pairwise import compare
from rlsys.roles.engines import start_engines, start_judge_engines
from rlsys.roles.reward_actors import RewardActors, actor_terms, judge_term, reward_specs, start_reward_actors
from rlsys.trainers.held_out import HeldOut


def answers_of(cfg, model: str, device: str, reward) -> tuple[HeldOut, list[str]]:
    """The model's greedy answers to the evaluation rows, from vLLM engines started for it and stopped after."""
    held_out = HeldOut(cfg, load_tokenizer(model), reward)
    r = cfg.rollout
    greedy = Sampling(n=1, temperature=0.0, max_new_tokens=r.max_new_tokens, stop=list(r.stop),
                      stop_token_ids=end_of_turn_ids(held_out.tokenizer))
    engines = start_engines(cfg, model, device, r.num_engines)
    try:
        answers = held_out.answer(lambda ids: [s["response_ids"] for s in engines.generate(ids, greedy)])
    finally:
        engines.kill()
    return held_out, answers


def run(cfg) -> dict:
    if cfg.eval.reward is not None:  # the terms to score with are the job's reward: its actors start for them
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.reward, cfg.eval.reward = cfg.eval.reward, None
    if cfg.data.train and not cfg.data.eval:
        raise RlsysError("rlsys eval answers the rows of data.eval (data.train is not read): set data.eval, or "
                         "leave both out for the embedded task's held-out split.")
    out = prepare_output_dir(cfg)
    models = list(cfg.eval.models) or [base_model_path(cfg)]
    for model in models + ([cfg.eval.against] if cfg.eval.against else []):
        check_model_dir(model)
    build_reward(reward_specs(cfg))  # every term checked before any actor starts
    device = resolve_device(cfg.cluster)
    reserve(cfg, device)
    actors = RewardActors()
    try:
        start_reward_actors(cfg, device, actors, lambda: start_judge_engines(cfg, device))
        reward = build_reward(reward_specs(cfg), actor_term=actor_terms(cfg, actors))
        reference = answers_of(cfg, cfg.eval.against, device, reward)[1] if cfg.eval.against else None
        if reference is not None and actors.judge is None:
            actors.judge = start_judge_engines(cfg, device)
        judge = judge_term(cfg, actors.judge, cfg.judge.model) if reference is not None else None
        results, rows, count = {}, [], 0
        for index, model in enumerate(models, 1):
            print(f"[eval] {index}/{len(models)}: {model}", flush=True)
            held_out, answers = answers_of(cfg, model, device, reward)
            metrics, samples = held_out.score(answers)
            count = len(samples)
            if judge is not None:
                versus = compare(judge.ask, cfg.eval.pairwise_template, cfg.eval.verdict_pattern, held_out.prompts,
                                 answers, reference)
                metrics.update(versus.metrics("eval/pairwise"))
                for sample, ref, outcome in zip(samples, reference, versus.outcomes):
                    sample.update(reference_completion=ref, outcome=outcome)
            results[model] = metrics
            rows += [{"model": model, **sample} for sample in samples]
    finally:
        actors.kill()
    summary = {"data": cfg.data.eval or "embedded held-out split", "rows": count,
               "against": cfg.eval.against, "judge": cfg.judge.model if cfg.eval.against else None,
               "models": results}
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / "eval_samples.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    print(table(results))
    print(f"[eval] -> {out / 'eval.json'}, {out / 'eval_samples.jsonl'}", flush=True)
    return summary


def table(results: dict[str, dict[str, float]]) -> str:
    keys = sorted({k for metrics in results.values() for k in metrics})
    names = {model: Path(model).parent.parent.name + "/" + Path(model).name if Path(model).name == "final"
             else Path(model).name for model in results}
    width = max(len(n) for n in names.values()) + 2
    header = "".join(f"{k.removeprefix('eval/').replace('pairwise/', ''):>14}" for k in keys)
    lines = [f"{'model':<{width}}{header}"]
    lines += [f"{names[m]:<{width}}" + "".join(f"{metrics.get(k, float('nan')):>14.3f}" for k in keys)
              for m, metrics in results.items()]
    return "\n".join(lines)
