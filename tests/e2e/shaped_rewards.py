"""A user reward function the policy can learn in a few dozen steps, so RL tests see a reward that must rise."""


def leading_one(prompts, completions, answer, **columns):
    """1 when the completion starts with the digit 1 (about half of the SFT model's answers do)."""
    assert len(answer) == len(completions), "dataset columns arrive aligned with the completions"
    return [1.0 if completion.strip().startswith("1") else 0.0 for completion in completions]


def not_leading_one(prompts, completions, **columns):
    """The opposite of leading_one: a gold signal that falls exactly as that proxy is learned."""
    return [0.0 if completion.strip().startswith("1") else 1.0 for completion in completions]
