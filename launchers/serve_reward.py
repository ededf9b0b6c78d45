"""`rlsys serve-reward`: the job's `reward` terms (rules, functions, reward models, a judge) behind HTTP.

Other jobs score against it with a reward term `{type: remote, url: http://HOST:PORT}`.
"""
from __future__ import annotations


def run(cfg) -> None:
    from rlsys.actors.cluster import reserve, resolve_device
    from rlsys.config.jobs import reward_actors
    from rlsys.errors import RlsysError
    from rlsys.rewards import build_reward
    from rlsys.rewards.server import resolve_token, serve
    from rlsys.roles.engines import start_judge_engines
    from rlsys.roles.reward_actors import RewardActors, actor_terms, reward_specs, start_reward_actors

    if cfg.judge.model == "policy" and any(t.type == "judge" for t in cfg.reward):
        raise RlsysError("serve-reward has no policy to judge with: set judge.model to a model folder.")
    specs = reward_specs(cfg)
    build_reward(specs)  # every term checked before any actor starts
    actors = RewardActors()
    if reward_actors(cfg, cfg.reward):  # reward models or a judge: Ray, and their actors
        device = resolve_device(cfg.cluster)
        reserve(cfg, device)
        start_reward_actors(cfg, device, actors, lambda: start_judge_engines(cfg, device))

    reward = build_reward(specs, actor_term=actor_terms(cfg, actors))

    def score(prompts: list[str], completions: list[str], columns: dict[str, list]):
        columns = dict(columns)
        # reward models read the conversation: a `messages` column (remote terms send it), else the prompt alone
        return reward(prompts, completions, columns, messages=columns.pop("messages", None))

    token, generated = resolve_token(cfg.serve.token)
    if generated:
        print(f"bearer token (generated; pass it to clients as the reward term's token or $RLSYS_REWARD_TOKEN):\n"
              f"  {token}", flush=True)
    try:
        serve(score, host=cfg.serve.host, port=cfg.serve.port, token=token,
              max_request_bytes=cfg.serve.max_request_bytes, max_batch=cfg.serve.max_batch)
    finally:
        actors.kill()
