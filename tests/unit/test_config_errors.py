"""Bad configs stop before anything starts, with one readable message that names the key (no traceback)."""
import subprocess
import sys

import pytest

from rlsys.config.compose import compose_job
from rlsys.config.jobs import uses_critic
from rlsys.config.validate import to_typed
from rlsys.errors import ConfigError


def rlsys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlsys", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_stepz=3", "unknown config key 'trainer.max_stepz'. Did you mean 'trainer.max_steps'?"),
    ("trainer.max_steps=abc", "config key 'trainer.max_steps' cannot be 'abc'"),
    ("trainer.batch_size=-4", "trainer.batch_size must be positive, got -4"),
    ("trainer.max_tokens_per_micro_batch=100", "must hold one sequence of data.max_length (128) tokens"),
    ("algo.kl_estimator=k9", "config key 'algo.kl_estimator' is 'k9'; allowed: k1, k2, k3"),
    ("optimiser.lr=1", "unknown config key 'optimiser'"),
])
def test_cli_config_errors_are_one_clear_line(override, expected):
    job = "grpo" if override.startswith("algo") else "sft"
    result = rlsys(job, override)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_more_devices_than_the_cluster_offers():
    from rlsys.launchers.run import user_message
    from rlsys.trainers import supervised

    cfg = to_typed(compose_job("sft", ["cluster.device=cuda", "cluster.num_gpus=1", "cluster.policy.num_ranks=4",
                                       "trainer.batch_size=256",
                                       "output_dir=/tmp/rlsys_test_devices"]))
    import ray

    try:
        with pytest.raises(Exception) as caught:
            supervised.train(cfg)
    finally:
        ray.shutdown()
    assert "ask for 4 GPUs but the cluster has" in user_message(caught.value)


def test_dynamic_sampling_needs_group_advantages():
    with pytest.raises(ConfigError, match="algo.dynamic_sampling .* use algo.advantage=group or rloo"):
        to_typed(compose_job("ppo", ["algo.dynamic_sampling=true"]))
    assert to_typed(compose_job("grpo", ["algo.dynamic_sampling=true"])).algo.max_sample_rounds == 3


def test_mini_batch_must_divide_rl_batch():
    with pytest.raises(ConfigError, match="algo.mini_batch_size .* must divide trainer.batch_size"):
        to_typed(compose_job("grpo", ["trainer.batch_size=3", "algo.mini_batch_size=2"]))


def test_help_lists_every_job_and_cfg_job_prints_config():
    out = rlsys("--help").stdout
    for job in ("pipeline", "pretrain", "sft", "grpo", "ppo"):
        assert f"  {job}" in out
    shown = rlsys("sft", "--cfg", "job", "trainer.max_steps=7")
    assert shown.returncode == 0 and "max_steps: 7" in shown.stdout


def test_help_into_a_closed_pipe_ends_quietly_and_leaves_signals_alone():
    import signal

    from rlsys.launchers.cli import main

    piped = subprocess.run(f"'{sys.executable}' -m rlsys --help | head -1", shell=True, capture_output=True, text=True,
                           timeout=120)
    assert piped.stdout.startswith("usage: rlsys") and piped.stderr == ""
    before = signal.getsignal(signal.SIGPIPE)  # the CLI runs inside other processes too (tests, notebooks)
    with pytest.raises(SystemExit):
        main(["sfft"])
    assert signal.getsignal(signal.SIGPIPE) == before


def test_a_new_column_mapping_is_set_as_typed():
    """data.columns holds the user's own keys: a new one needs no Hydra `+`, and an existing one still works."""
    shown = rlsys("sft", "data.columns.solution=gold", "data.columns.prompt=question", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    assert "solution: gold" in shown.stdout and "prompt: question" in shown.stdout


def test_unknown_job():
    result = rlsys("sfft")
    assert result.returncode == 2 and "unknown job 'sfft'" in result.stderr


@pytest.mark.parametrize("job, overrides, message", [
    ("grpo", ["algo.lam=0.9"], "algo.lam is a setting of the critic, and algo.advantage=group has none"),
    ("ppo", ["algo.advantage=rloo", "algo.critic_lr=1e-4"], "algo.critic_lr is a setting of the critic"),
    ("ppo", ["algo.scale_by_std=false"], "algo.scale_by_std=false is Dr.GRPO's change to group advantages"),
    ("grpo", ["algo.gamma=0.9"], "algo.gamma discounts rewards token by token"),
    ("grpo", ["algo.kl_controller=adaptive"], "algo.kl_controller=adaptive scales algo.kl_coef, which is 0"),
])
def test_settings_that_mean_nothing_for_the_algorithm_are_refused(job, overrides, message):
    with pytest.raises(ConfigError, match=message):
        to_typed(compose_job(job, overrides))


def test_the_estimator_names_the_algorithm_and_algo_name_points_to_it():
    assert to_typed(compose_job("grpo", ["algo.advantage=rloo"])).algo.advantage == "rloo"
    with_critic = to_typed(compose_job("grpo", ["algo.advantage=gae", "algo.dynamic_sampling=false", "algo.lam=0.9"]))
    assert with_critic.algo.lam == 0.9 and uses_critic(with_critic)
    result = rlsys("grpo", "algo.name=rloo")
    assert result.returncode == 2 and "unknown config key 'algo.name'. It is now algo.advantage" in result.stderr
