"""A user reward function the policy can learn in a few dozen steps, so RL tests see a reward that must rise."""


def leading_one(prompts, completions, answer, **columns):
    """1 when the completion starts with the digit 1 (about half of the SFT model's answers do)."""
    assert len(answer) == len(completions), "dataset columns arrive aligned with the completions"
    return [1.0 if completion.strip().startswith("1") else 0.0 for completion in completions]
