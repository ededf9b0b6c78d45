"""A catalogue of bad inputs across config, data, models and rewards: each stops with one clear message that names
the problem (or, for per-row problems under data.on_error=skip, a counted skip), and nothing hangs."""
import json

import numpy as np
import pytest

from rlsys.data.sources import load_rows
from rlsys.launchers.cli import main
from rlsys.rewards import RewardError, WeightedReward

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("bad_inputs") / "tiny", texts=tokenizer_texts()))


@pytest.fixture
def rlsys(capsys, tmp_path):
    """Run the CLI in this process; (exit code, stderr). Every refusal here comes before any actor starts: Ray is
    not started by it (nor, where an earlier test left Ray running, given a placement group)."""
    import ray

    def placement_groups() -> int:
        return len(ray.util.placement_group_table()) if ray.is_initialized() else 0

    def run(*args: str) -> tuple[int, str]:
        ray_was_up, groups = ray.is_initialized(), placement_groups()
        with pytest.raises(SystemExit) as ended:
            main([*args, f"output_dir={tmp_path / 'run'}"] if args[0] != "sfft" else list(args))
        assert ray.is_initialized() == ray_was_up and placement_groups() == groups, "refused after actors started"
        return ended.value.code, capsys.readouterr().err
    return run


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def assert_clear(code: int, err: str, expected_code: int, *phrases: str) -> None:
    assert code == expected_code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for phrase in phrases:
        assert phrase in err


# ---- config -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, phrases", [
    (["sft", "trainer.max_stepz=3"], ["unknown config key 'trainer.max_stepz'", "trainer.max_steps"]),
    (["sft", "trainer.max_steps=abc"], ["'trainer.max_steps' cannot be 'abc'"]),
    (["sft", "trainer.batch_size=-1"], ["trainer.batch_size must be positive"]),
    (["sft", "trainer.micro_batch_size=48"], ["unknown config key 'trainer.micro_batch_size'",
                                              "trainer.max_tokens_per_micro_batch"]),
    (["grpo", "algo.kl_estimator=k9"], ["'algo.kl_estimator' is 'k9'; allowed: k1, k2, k3"]),
    (["sft", "trainer.max_steps=["], ["cannot parse override"]),
    (["sft", "data.max_length=4"], ["data.max_length must be above 8"]),
    (["sft", "logger=[console,tensorboard]"], ["config key 'logger' is 'tensorboard'; allowed: console, jsonl, wandb"]),
    (["grpo", "rollout.max_new_tokens=0"], ["rollout.max_new_tokens is the answer's length limit"]),
    (["grpo", "rollout.temperature=-0.5"], ["rollout.temperature must be 0 (greedy) or more"]),
    (["serve-reward", "serve.port=99999"], ["serve.port must be a TCP port, 1-65535, got 99999"]),
    (["ppo", "algo.critic_lr=0"], ["algo.critic_lr must be positive, got 0"]),  # as trainer.lr
    (["sft", "trainer.keep_last=0"], ["trainer.keep_last must be at least 1"]),  # it pruned the one just saved
    (["sft", "trainer.preempt_grace_s=-1"], ["trainer.preempt_grace_s must be zero or positive"]),
    # colocated engines that would overbook a device, or span several
    (["grpo", "cluster.colocate=true"], ["rollout.num_engines=2 colocated engines would share 1 policy device"]),
    (["ppo", "cluster.colocate=true", "rollout.tensor_parallel_size=2"], ["rollout.tensor_parallel_size=1"]),
])
def test_config_errors(rlsys, args, phrases):
    assert_clear(*rlsys(*args), 2, *phrases)


def test_unknown_job(rlsys):
    code, err = rlsys("sfft")
    assert code == 2 and "unknown job 'sfft'" in err


# ---- models ---------------------------------------------------------------------------------------------
def test_missing_model_folder(rlsys, tmp_path):
    assert_clear(*rlsys("sft", f"model.path={tmp_path / 'nowhere'}"), 1, "does not exist", "model.path")


def test_model_folder_with_an_empty_config(rlsys, tmp_path):
    (tmp_path / "damaged").mkdir()
    write(tmp_path / "damaged" / "config.json", "")
    assert_clear(*rlsys("sft", f"model.path={tmp_path / 'damaged'}"), 1, "config.json' is not valid JSON")


def test_model_path_pointing_to_a_file(rlsys, tiny):
    assert_clear(*rlsys("sft", f"model.path={tiny}/config.json"), 1, "is a file", f"({tiny})")


def test_model_folder_without_config(rlsys, tmp_path):
    (tmp_path / "empty_model").mkdir()
    assert_clear(*rlsys("sft", f"model.path={tmp_path / 'empty_model'}"), 1, "has no config.json")


def test_tokenizer_without_chat_template(rlsys, tiny, tmp_path):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    assert_clear(*rlsys("sft", f"model.path={plain}"), 1, "has no chat template")


# ---- data -----------------------------------------------------------------------------------------------
def test_missing_data_file(rlsys, tiny, tmp_path):
    assert_clear(*rlsys("sft", f"model.path={tiny}", f"data.train={tmp_path / 'nope.jsonl'}"), 1, "does not exist")


def test_malformed_jsonl_line(rlsys, tiny, tmp_path):
    data = write(tmp_path / "d.jsonl", '{"messages": []}\n{"messages": [\n')
    assert_clear(*rlsys("sft", f"model.path={tiny}", f"data.train={data}"), 1, "line 2 of", "data.on_error=skip")


def test_malformed_rows_are_skipped_and_counted(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"text": "a"}\nnot json\n{"text": "b"}\n[1, 2]\n')
    loaded = load_rows(data, columns={}, required=["text"], on_error="skip")
    assert [r["text"] for r in loaded.rows] == ["a", "b"] and loaded.skipped == 2


def test_invalid_utf8(rlsys, tiny, tmp_path):
    data = write(tmp_path / "d.jsonl", b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    assert_clear(*rlsys("pretrain", f"model.path={tiny}", f"data.train={data}"), 1, "line 2 of")


def test_missing_column(rlsys, tiny, tmp_path):
    data = write(tmp_path / "d.jsonl", '{"body": "some text"}\n')
    assert_clear(*rlsys("pretrain", f"model.path={tiny}", f"data.train={data}"), 1, "no column 'text'",
                 "data.columns.text=")


def test_rows_without_a_conversation(rlsys, tiny, tmp_path):
    data = write(tmp_path / "d.jsonl", '{"question": "hi"}\n')
    assert_clear(*rlsys("sft", f"model.path={tiny}", f"data.train={data}"), 1, "row 0 of", "neither 'messages'",
                 "its columns: question", "data.columns.prompt=YOUR_COLUMN")


def test_a_message_role_rlsys_does_not_know(rlsys, tiny, tmp_path):
    data = write(tmp_path / "d.jsonl", json.dumps({"messages": [{"role": "robot", "content": "beep"}]}) + "\n")
    assert_clear(*rlsys("sft", f"model.path={tiny}", f"data.train={data}"), 1, "message role 'robot'",
                 "system, user, assistant, tool")


def test_corrupt_parquet_file(rlsys, tiny, tmp_path):
    data = write(tmp_path / "d.parquet", b"PAR1 this is not a parquet file PAR1")
    assert_clear(*rlsys("pretrain", f"model.path={tiny}", f"data.train={data}"), 1, "cannot read parquet data",
                 "d.parquet")


def test_empty_data_file(rlsys, tiny, tmp_path):
    data = write(tmp_path / "d.jsonl", "")
    assert_clear(*rlsys("sft", f"model.path={tiny}", f"data.train={data}"), 1, "holds no rows")


def test_folder_mixing_formats(rlsys, tiny, tmp_path):
    (tmp_path / "mixed").mkdir()
    write(tmp_path / "mixed" / "a.jsonl", '{"text": "a"}\n')
    write(tmp_path / "mixed" / "b.parquet", b"PAR1")
    assert_clear(*rlsys("pretrain", f"model.path={tiny}", f"data.train={tmp_path / 'mixed'}"), 1, "mixes file types")


@pytest.mark.parametrize("job, row", [
    ("sft", {"prompt": "Hi?", "response": "Hello."}),
    ("grpo", {"prompt": "What is 1 + 1?", "answer": "2"}),
    ("dpo", {"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}),
    ("dpo", {"prompt": "What is 1 + 1?", "answer": "2", "online": True}),
])
def test_data_smaller_than_one_batch(rlsys, tiny, tmp_path, job, row):
    online = row.pop("online", False)
    data = write(tmp_path / "one.jsonl", json.dumps(row) + "\n")
    code, err = rlsys(job, f"model.path={tiny}", f"data.train={data}", "trainer.batch_size=8",
                      *(["algo.online=true"] if online else []))
    setting = "trainer.batch_size x algo.round_steps" if online else "trainer.batch_size"
    assert_clear(code, err, 1, "are fewer than the 8 each step draws", f"Lower {setting} to at most 1")


@pytest.mark.parametrize("override, phrases", [  # memory on this machine, CPUs on a Ray already running
    ("rollout.num_engines=64", ["Lower rollout.num_engines (the rollout: 64"]),
    ("cluster.policy.num_ranks=40", ["Lower cluster.policy.num_ranks (the policy: 40"]),
    ("cluster.num_cpus=1", ["the roles ask for 4 CPUs and this machine (cluster.num_cpus) has 1"]),
])
def test_more_than_the_machine_holds(rlsys, tiny, override, phrases):
    assert_clear(*rlsys("grpo", f"model.path={tiny}", override), 1, *phrases)


def test_empty_prompt(rlsys, tiny, tmp_path):
    data = write(tmp_path / "p.jsonl", '{"prompt": "", "answer": "1"}\n')
    assert_clear(*rlsys("grpo", f"model.path={tiny}", f"data.train={data}"), 1, "prompt 0 is empty")


def test_prompt_longer_than_the_context(rlsys, tiny, tmp_path):
    data = write(tmp_path / "p.jsonl", json.dumps({"prompt": "What is 1 + 1? " * 40, "answer": "2"}) + "\n")
    assert_clear(*rlsys("grpo", f"model.path={tiny}", f"data.train={data}"), 1,
                 "more than data.max_length - rollout.max_new_tokens")


def test_prompts_longer_than_the_context_are_skipped_and_counted_with_on_error_skip(tiny, capsys):
    from rlsys.config.compose import compose_job
    from rlsys.config.validate import to_typed
    from rlsys.data.job_data import encode_prompts
    from rlsys.models.builders import load_tokenizer

    cfg = to_typed(compose_job("grpo", [f"model.path={tiny}", "data.on_error=skip"]))
    rows = [{"messages": [{"role": "user", "content": text}]} for text in ("What is 1 + 1?", "What is 1 + 1? " * 40)]
    encoded = encode_prompts(cfg, load_tokenizer(tiny), rows)
    assert len(encoded) == len(rows) == 1 and rows[0]["messages"][0]["content"] == "What is 1 + 1?"
    assert "skipped 1 of 2 prompts" in capsys.readouterr().out


# ---- run folder -------------------------------------------------------------------------------------------
def test_unwritable_output_dir(capsys, tiny):
    with pytest.raises(SystemExit) as ended:
        main(["sft", f"model.path={tiny}", "output_dir=/proc/rlsys_cannot_write_here"])
    assert_clear(ended.value.code, capsys.readouterr().err, 1, "is not writable", "output_dir")


def test_resume_from_something_that_is_not_a_checkpoint(rlsys, tiny, tmp_path):
    assert_clear(*rlsys("sft", f"model.path={tiny}", f"resume={tmp_path}"), 1, "is not an rlsys checkpoint")


# ---- rewards ----------------------------------------------------------------------------------------------
def test_unknown_reward_rule(rlsys, tiny):
    assert_clear(*rlsys("grpo", f"model.path={tiny}", "reward=[{type: rule, name: exact}]"), 1, "exact")


def test_reward_function_file_missing(rlsys, tiny):
    assert_clear(*rlsys("grpo", f"model.path={tiny}", "reward=[{type: function, path: nowhere.py:score}]"), 1,
                 "nowhere.py")


@pytest.mark.parametrize("setting, body, phrases", [
    ("reward", "import time\ntime.sleep(3600)\n", ["importing reward file", "did not finish within 1s",
                                                     "stuck.py:2 (time.sleep(3600))", "raise watchdog.load_s"]),
    ("env", "import time\ntime.sleep(3600)\n", ["environment file", "watchdog.load_s", "stuck.py:2"]),
    ("reward", "import sys\nsys.exit('no GPU here')\n", ["failed with SystemExit: no GPU here"]),
])
def test_user_code_that_hangs_or_exits_while_it_loads(rlsys, tiny, tmp_path, setting, body, phrases):
    path = write(tmp_path / "stuck.py", body)
    where = (f"reward=[{{type: function, path: '{path}:score'}}]" if setting == "reward" else
             f"env.path={path}:Env")
    code, err = rlsys("grpo", f"model.path={tiny}", where, "watchdog.load_s=1")
    assert_clear(code, err, 1, *phrases)


@pytest.mark.parametrize("body, phrase", [
    ("raise ValueError('judge offline')", "raised ValueError: judge offline"),
    ("return [float('nan')] * len(completions)", "NaN"),
    ("return [1.0]", "returned 1 values for 2 completions"),
])
def test_reward_function_misbehaving(tmp_path, body, phrase):
    from rlsys.rewards import load_reward_function

    write(tmp_path / "bad_reward.py", f"def score(prompts, completions, **columns):\n    {body}\n")
    reward = WeightedReward([("bad", load_reward_function(f"{tmp_path / 'bad_reward.py'}:score"), 1.0)])
    with pytest.raises(RewardError) as caught:
        reward(["p", "q"], ["a", "b"], {"answer": ["1", "2"]})
    assert "bad" in str(caught.value) and phrase in str(caught.value)


def test_reward_function_with_the_wrong_signature_is_found_at_load(rlsys, tiny, tmp_path):
    path = write(tmp_path / "one_arg.py", "def score(completions):\n    return [0.0] * len(completions)\n")
    assert_clear(*rlsys("grpo", f"model.path={tiny}", f"reward=[{{type: function, path: '{path}:score'}}]"), 1,
                 "takes (completions)", "fn(prompts, completions, **columns)")


def test_reward_function_gets_only_the_columns_it_names(tmp_path):
    reward = WeightedReward([("gold", lambda prompts, completions, gold: [float(c == g) for c, g in
                                                                         zip(completions, gold)], 1.0)])
    total, _ = reward(["p", "q"], ["1", "2"], {"gold": ["1", "3"], "id": [7, 8]})
    assert list(total) == [1.0, 0.0]


def test_training_rows_without_a_column_the_reward_reads(rlsys, tiny, tmp_path):
    data = write(tmp_path / "p.jsonl", '{"prompt": "What is 1 + 1?", "solution": "2"}\n')
    code, err = rlsys("grpo", f"model.path={tiny}", f"data.train={data}")
    assert_clear(code, err, 1, "reward term 'answer_match'", "['answer']", "data.columns.answer=")
    assert_suggested_mapping_works(err, "solution", "grpo", f"model.path={tiny}", f"data.train={data}")


def test_a_column_mapped_for_the_reward_also_keeps_its_own_name(tiny, tmp_path):
    data = write(tmp_path / "p.jsonl", '{"question": "What is 1 + 1?", "solution": "2"}\n')
    reward = ("reward=[{type: function, path: '" + write(tmp_path / "r.py", "def gold(prompts, completions, solution, "
              "gold):\n    return [1.0] * len(completions)\n") + ":gold'}]")
    rows = checked_rows("grpo", f"model.path={tiny}", f"data.train={data}", "data.columns.prompt=question",
                        "data.columns.gold=solution", reward)
    assert rows[0]["question"] == rows[0]["prompt"] == "What is 1 + 1?"
    assert rows[0]["solution"] == rows[0]["gold"] == "2"


def checked_rows(job: str, *overrides: str) -> list[dict]:
    """The job's training rows after the reward's column check, from its config as the command line gives it."""
    from rlsys.config.compose import compose_job
    from rlsys.config.validate import to_typed
    from rlsys.data.job_data import prompt_rows
    from rlsys.rewards import build_reward, plain_specs
    from rlsys.trainers.held_out import check_columns

    cfg = to_typed(compose_job(job, list(overrides)))
    rows = prompt_rows(cfg, "train")
    check_columns(build_reward(plain_specs(cfg.reward)), rows, cfg.data.train, "reward")
    return rows


def assert_suggested_mapping_works(err: str, column: str, job: str, *overrides: str) -> None:
    """The message's `data.columns.NAME=YOUR_COLUMN`, typed as written with the user's column, passes the check."""
    import re

    suggestion = re.search(r"(data\.columns\.\w+=)YOUR_COLUMN", err).group(1) + column
    rows = checked_rows(job, *overrides, suggestion)
    assert rows and all(column in row for row in rows)


def test_eval_rows_without_a_column_the_reward_reads(rlsys, tiny, tmp_path):
    train = write(tmp_path / "t.jsonl", '{"prompt": "Hi?", "response": "Hello."}\n' * 4)
    held_out = write(tmp_path / "e.jsonl", '{"prompt": "Bye?"}\n')
    assert_clear(*rlsys("sft", f"model.path={tiny}", f"data.train={train}", f"data.eval={held_out}",
                        "trainer.batch_size=4"), 1, f"rows of {held_out}", "the eval.reward term", "set eval.reward")


def test_eval_without_eval_rows(rlsys, tiny, tmp_path):
    train = write(tmp_path / "t.jsonl", '{"prompt": "Hi?", "answer": "1"}\n')
    assert_clear(*rlsys("eval", f"model.path={tiny}", f"data.train={train}"), 1, "set data.eval")


def test_reward_of_the_right_shape_passes(tmp_path):
    reward = WeightedReward([("ok", lambda p, c, **k: [0.5] * len(c), 2.0)])
    total, _ = reward(["p"], ["a"], {})
    assert np.allclose(total, [1.0])


# ---- preference learning, distillation, judges ------------------------------------------------------------
@pytest.mark.parametrize("args, phrases", [
    (["dpo", "algo.beta=0"], ["algo.beta must be positive"]),
    (["dpo", "algo.preference_loss=hinge"], ["'algo.preference_loss' is 'hinge'; allowed: sigmoid, ipo"]),
    (["dpo", "algo.label_smoothing=0.7"], ["algo.label_smoothing is the share of flipped labels"]),
    (["pipeline", "pipeline.rl=kto"], ["'pipeline.rl' is 'kto'"]),
    (["grpo", "reward=[{type:judge}]"], ["a reward of type judge needs judge.model"]),
])
def test_preference_and_judge_config_errors(rlsys, args, phrases):
    assert_clear(*rlsys(*args), 2, *phrases)


def test_distill_without_a_teacher(rlsys, tiny):
    assert_clear(*rlsys("distill", f"model.path={tiny}"), 1, "distill needs a teacher: distill.teacher=PATH")
    assert_clear(*rlsys("distill", "distill.on_policy=true", f"model.path={tiny}"), 1, "distill needs a teacher")


def test_an_on_policy_teacher_with_another_tokenizer_is_refused_naming_both(rlsys, tiny, tmp_path, capsys):
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    texts = [f"A teacher of another family: {text[::-1]}" for text in tokenizer_texts()]  # another vocabulary
    other = str(build_tiny_model(tmp_path / "other", texts=texts))
    capsys.readouterr()  # the build's progress bar
    code, err = rlsys("distill", "distill.on_policy=true", f"distill.teacher={other}", f"model.path={tiny}")
    assert_clear(code, err, 1, f"the teacher {other} does not share the student's tokenizer ({tiny})",
                 "tokens against the student's")


@pytest.mark.parametrize("args, phrases", [
    (["grpo", "distill.on_policy=true"], ["distill.on_policy is a mode of `rlsys distill`"]),
    (["grpo", "distill.teacher_kl_coef=-1"], ["distill.teacher_kl_coef weighs the teacher's per-token signal"]),
    (["distill", "distill.on_policy=true", "distill.teacher=x", "distill.teacher_kl_coef=0"],
     ["on-policy distillation trains on the teacher's signal alone"]),
])
def test_distillation_settings_that_mean_nothing(rlsys, args, phrases):
    assert_clear(*rlsys(*args), 2, *phrases)


def test_reward_model_term_without_a_path(rlsys, tiny):
    assert_clear(*rlsys("grpo", f"model.path={tiny}", "reward=[{type:model}]"), 1, "needs 'path'")


def test_preference_pairs_without_a_rejected_column(rlsys, tiny, tmp_path):
    data = write(tmp_path / "pairs.jsonl", json.dumps({"prompt": "2 + 2?", "chosen": "4"}) + "\n")
    assert_clear(*rlsys("rm", f"model.path={tiny}", f"data.train={data}"), 1, "rejected")


def test_unparsable_judge_replies():
    from types import SimpleNamespace

    from rlsys.config.schema import JUDGE_TEMPLATE
    from rlsys.rewards.judge import JudgeReward

    cfg = SimpleNamespace(template=JUDGE_TEMPLATE, score_pattern=r"\d+", min_score=0, max_score=10,
                          max_parse_failure_rate=0.5, parse_failure_score=0.0)
    judge = JudgeReward(lambda texts: ["I'd rather not say"] * len(texts), cfg)
    reward = WeightedReward([("judge", judge, 1.0)])
    with pytest.raises(RewardError, match=r"could not be parsed into a score for 2 of 2 samples.*rather not say"):
        reward(["q", "q"], ["a", "b"])


# ---- reward server ----------------------------------------------------------------------------------------
class StubServer:
    """An HTTP server on 127.0.0.1 answering every POST with `status` after `delay_s` seconds."""

    def __init__(self, status: int, delay_s: float = 0.0):
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay_s)
                body = json.dumps({"error": "missing or wrong bearer token"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a client that timed out has gone

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def remote(url: str, **options):
    from rlsys.rewards import build_reward

    return build_reward([{"type": "remote", "url": url, "token": "t", "max_retries": 1, **options}])


def test_reward_server_down():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the client connects: nobody listens there
    with pytest.raises(RewardError, match=rf"127.0.0.1:{port}.*2 attempts.*rlsys serve-reward"):
        remote(f"http://127.0.0.1:{port}")(["q"], ["a"])


def test_reward_server_refuses_the_token():
    with StubServer(401) as stub, pytest.raises(RewardError, match="token"):
        remote(stub.url)(["q"], ["a"])


def test_reward_server_too_slow():
    with StubServer(200, delay_s=1.0) as stub, pytest.raises(RewardError, match="timed out"):
        remote(stub.url, timeout_s=0.2)(["q"], ["a"])


# ---- disk -------------------------------------------------------------------------------------------------
def test_full_disk_during_a_checkpoint_save_keeps_the_previous_one(tmp_path):
    """A disk that fills up mid-save (a group whose write fails with ENOSPC, as a full disk makes it)."""
    import errno
    from pathlib import Path

    from rlsys.errors import RlsysError
    from rlsys.loop.checkpoints import Checkpoints

    class Group:
        def __init__(self, full: bool):
            self.full = full

        def save_checkpoint(self, folder: str) -> None:
            Path(folder).mkdir(parents=True)
            (Path(folder) / "shard.pt").write_bytes(b"x" * 1024)
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")

    checkpoints = Checkpoints(str(tmp_path), keep_last=2)
    checkpoints.save(2, {"policy": Group(full=False)}, {"job": "sft"})
    with pytest.raises(RlsysError, match=r"could not save checkpoint step_000004.*No space left on device.*"
                                         r"step_000002 is intact.*resume=auto"):
        checkpoints.save(4, {"policy": Group(full=True)}, {"job": "sft"})
    assert checkpoints.latest() == tmp_path / "checkpoints" / "step_000002"
    assert not list((tmp_path / "checkpoints").glob(".tmp_*")), "the partial save is removed"
