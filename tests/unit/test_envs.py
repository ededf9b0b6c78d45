"""The environment API without actors: tool-call parsing, the built-in environments, what a step may return,
rendering new turns token-exactly, loading from config, and the loss mask and turn rewards in training."""
import math

import pytest
import torch

from rlsys.envs import StepResult, parse_assistant
from rlsys.envs.base import MalformedOutput, check_messages, check_step
from rlsys.envs.calculator import CalculatorEnv, calculator
from rlsys.envs.loading import load_env_class
from rlsys.envs.rendering import TurnRenderer
from rlsys.envs.retry import RetryEnv
from rlsys.errors import ConfigError, ModelError

CALL = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "347 * 862"}}\n</tool_call>'
ROW = {"messages": [{"role": "user", "content": "What is 347 * 862?"}], "answer": "299114"}


@pytest.fixture(scope="module")
def tokenizer():
    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import train_tokenizer

    return train_tokenizer(tokenizer_texts(n=200))


def test_tool_calls_are_parsed_hermes_style():
    message = parse_assistant("Let me compute.\n" + CALL)
    assert message["content"] == "Let me compute."
    assert message["tool_calls"] == [{"type": "function", "function": {"name": "calculator",
                                                                       "arguments": {"expression": "347 * 862"}}}]
    as_string = parse_assistant('<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>')
    assert as_string["tool_calls"][0]["function"]["arguments"] == {"x": 1}
    broken = parse_assistant('<tool_call>{"name": calculator}</tool_call> and <tool_call>{"name": "f"')
    assert "tool_calls" not in broken and len(broken["tool_call_errors"]) == 2 and broken["content"] == "and"
    assert parse_assistant("42") == {"role": "assistant", "content": "42"}


def test_calculator_tool_and_episode():
    assert calculator("347 * 862") == "299114" and calculator("7 / 2") == "3.5" and calculator("-(2 + 3)") == "-5"
    with pytest.raises(ValueError):
        calculator("__import__('os')")
    env = CalculatorEnv()
    assert env.tools[0]["function"]["name"] == "calculator"
    assert env.reset(ROW) == ROW["messages"]
    result = env.step(parse_assistant(CALL))
    assert result.observations == [{"role": "tool", "content": "299114"}] and not result.done
    wrong = env.step(parse_assistant('<tool_call>{"name": "abacus", "arguments": {}}</tool_call>'))
    assert wrong.observations[0]["content"].startswith("error: no tool named 'abacus'")
    final = env.step(parse_assistant("299114"))
    assert final.done and final.info == {"tool_calls": 2, "tool_errors": 1}


def test_calculator_demonstration_calls_the_tool_with_the_question():
    demo = CalculatorEnv.demonstration(ROW)
    assert [m["role"] for m in demo] == ["user", "assistant", "tool", "assistant"]
    assert demo[1]["tool_calls"][0]["function"]["arguments"] == {"expression": "347 * 862"}
    assert demo[2]["content"] == demo[3]["content"] == "299114"


def test_retry_reward_falls_with_turns():
    rewards = []
    for wrong_first in range(3):
        env = RetryEnv(penalty=0.25)
        env.reset(ROW)
        for _ in range(wrong_first):
            assert env.step({"role": "assistant", "content": "1"}).observations
        rewards.append(env.step({"role": "assistant", "content": "299114"}).reward)
    assert rewards == [1.0, 0.75, 0.5]


def test_step_results_are_checked():
    assert check_step(([], 1, True)) == StepResult([], 1.0, True, {})
    assert check_step(("hint", 0.0, False, {"k": 1})).observations == [{"role": "user", "content": "hint"}]
    for bad, why in [("done", r"return \(observation"), (([], "1", True), "finite number"),
                     (([], float("nan"), True), "finite number"), (([], 1.0, True, []), "info"),
                     (([{"role": "robot", "content": "x"}], 1.0, False), "role")]:
        with pytest.raises(MalformedOutput, match=why):
            check_step(bad)
    for bad in (42, "What is 2 + 2?", [["user", "hi"]]):  # a reset() must return a conversation
        with pytest.raises(MalformedOutput, match=r"reset\(\) returned .*expected a list of messages"):
            check_messages(bad, "reset()")


def test_new_turns_render_token_exactly(tokenizer):
    """prompt + the model's turn + the observation's tokens == the whole conversation rendered at once."""
    tools = CalculatorEnv().tools
    renderer = TurnRenderer(tokenizer, tools, [tokenizer.eos_token_id])
    demo = CalculatorEnv.demonstration(ROW)
    prompt = renderer.prompt_ids(demo[:1])
    whole = tokenizer(tokenizer.apply_chat_template(demo[:3], tools=tools, tokenize=False,
                                                    add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    turn = tokenizer(CALL, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert prompt + turn + renderer.observation_ids(demo[2:3], model_ended_turn=True) == whole
    cut = renderer.observation_ids(demo[2:3], model_ended_turn=False)  # a turn cut short is closed for it
    assert cut[0] == tokenizer.eos_token_id and cut[1:] == renderer.observation_ids(demo[2:3], True)
    assert '"name": "calculator"' in tokenizer.decode(prompt)


def test_a_template_without_tools_is_a_clear_error(tokenizer):
    plain = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>")
    plain.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(ModelError, match="my-model.*does not render tools="):
        TurnRenderer(plain, CalculatorEnv().tools, [plain.eos_token_id], model="my-model")
    TurnRenderer(plain, [], [plain.eos_token_id])  # no tools: nothing to render


def test_environments_load_with_clear_errors(tmp_path):
    env = lambda **kw: type("EnvCfg", (), {"name": None, "path": None, **kw})()
    assert load_env_class(env(name="calculator")) == ("calculator", CalculatorEnv)
    source = tmp_path / "my_env.py"
    source.write_text("class Good:\n    def reset(self, row): ...\n    def step(self, m): ...\nclass NoStep:\n"
                      "    def reset(self, row): ...\n")
    assert load_env_class(env(path=f"{source}:Good"))[1].__name__ == "Good"
    for spec, why in [(env(name="chess"), "not a built-in environment"), (env(path=f"{source}:Bad"),
                      "has no class 'Bad'.*Good, NoStep"), (env(path=f"{source}:NoStep"), "has no step method"),
                      (env(path="missing.py:X"), "environment file 'missing.py' not found"),
                      (env(path="my_env"), "should be 'path/file.py:ClassName'")]:
        with pytest.raises(ConfigError, match=why):
            load_env_class(spec)


def test_loss_mask_is_the_response_mask():
    from rlsys.config.compose import compose_job
    from rlsys.config.losses import PolicyLoss
    from rlsys.config.validate import to_typed
    from rlsys.engine.batch import loss_tokens, to_tensors, with_loss_weights

    batch = {"prompt_ids": [[5, 6], [7]], "response_ids": [[1, 2, 3, 4], [8, 9]],
             "loss_mask": [[1.0, 0.0, 0.0, 1.0], [1.0, 1.0]], "advantages": [[1.0] * 4, [0.5] * 2]}
    assert loss_tokens(batch) == [2, 2]
    weighted = with_loss_weights(batch, PolicyLoss.from_config(to_typed(compose_job("grpo")), kl_coef=0.0))
    tensors, _ = to_tensors(weighted, pad_id=0)
    assert tensors["response_mask"].tolist() == [[0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]]
    assert tensors["loss_weight"].sum().item() == pytest.approx(1.0), "the mean over the model's tokens only"


def test_turn_rewards_are_credited_where_earned():
    from rlsys.algorithms.advantages import estimate_advantages
    from rlsys.config.schema import AlgoConfig

    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    turns = torch.tensor([[0.0, 0.5, 0.0, 0.0]])  # 0.5 after the first turn, 1.0 at the end: 1.5 in all
    algo = AlgoConfig(advantage="reinforce_pp", gamma=1.0, n_samples=1)
    scores = torch.tensor([1.5])
    with_turns, _ = estimate_advantages(algo, scores, mask, None, None, None, 0.0, turns)
    returns = torch.tensor([[1.5, 1.5, 0.0, 1.0]])  # return-to-go, then whitened over the model's tokens
    mean, std = returns[mask > 0].mean(), returns[mask > 0].std()
    expected = (returns - mean) / (std + 1e-8) * mask
    assert torch.allclose(with_turns, expected, atol=1e-4) and not math.isnan(with_turns.sum().item())
