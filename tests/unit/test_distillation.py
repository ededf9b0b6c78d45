"""On-policy distillation's signal: each sampled token's advantage is minus its reverse KL to the teacher, and a
teacher is only accepted with the student's tokenizer."""
import math

import pytest
import torch

from rlsys.algorithms.distillation import distill_metrics, reverse_kl, teacher_advantages
from rlsys.models.tokenizer_match import tokenizer_difference

NAN = float("nan")


def test_the_per_token_advantage_is_minus_the_reverse_kl_by_hand():
    student = torch.tensor([[-0.5, -1.0, -2.0], [-0.1, NAN, -3.0]])
    teacher = torch.tensor([[-0.25, -3.0, -0.5], [-0.4, -0.2, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 2: its last position is padding
    expected = [[-(-0.5 + 0.25), -(-1.0 + 3.0), -(-2.0 + 0.5)],
                [-(-0.1 + 0.4), 0.0, 0.0]]  # no sampler logprob, or not trained: no signal
    expected = torch.tensor(expected)
    torch.testing.assert_close(teacher_advantages(student, teacher, mask, coef=1.0), expected)
    torch.testing.assert_close(teacher_advantages(student, teacher, mask, coef=0.5), 0.5 * expected)
    assert not reverse_kl(student, teacher, mask).isnan().any()


def test_a_student_that_samples_what_the_teacher_would_gets_no_push():
    logp = torch.log_softmax(torch.randn(4, 6), -1)
    assert teacher_advantages(logp, logp.clone(), torch.ones(4, 6), coef=1.0).abs().max() == 0


def test_the_reverse_kl_estimate_is_unbiased_over_the_student_samples():
    """Its mean over tokens sampled from the student converges to KL(student || teacher)."""
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.log_softmax(torch.randn(8, generator=generator), -1), torch.log_softmax(
        torch.randn(8, generator=generator), -1)
    tokens = torch.multinomial(student.exp(), 200_000, replacement=True, generator=generator)
    estimate = reverse_kl(student[tokens][None], teacher[tokens][None], torch.ones(1, len(tokens))).mean().item()
    exact = (student.exp() * (student - teacher)).sum().item()
    assert estimate == pytest.approx(exact, abs=0.02)


def test_metrics_average_the_graded_tokens_only():
    student = torch.tensor([[-1.0, -2.0, NAN]])
    teacher = torch.tensor([[-1.5, -1.0, -4.0]])
    metrics = distill_metrics(student, teacher, torch.ones(1, 3))
    assert metrics["distill/reverse_kl"] == pytest.approx((0.5 - 1.0) / 2)
    assert metrics["distill/teacher_logp_mean"] == pytest.approx(-1.25)
    assert all(math.isfinite(v) for v in metrics.values())


class Vocab:
    def __init__(self, vocab: dict, eos: int = 0):
        self.vocab, self.eos_token_id, self.pad_token_id, self.bos_token_id = vocab, eos, eos, None

    def get_vocab(self) -> dict:
        return dict(self.vocab)


def test_tokenizers_that_read_ids_differently_are_told_apart():
    base = {"a": 0, "b": 1, "c": 2}
    assert tokenizer_difference(Vocab(base), Vocab(dict(base))) is None
    assert "4 tokens against the student's 3" in tokenizer_difference(Vocab(base), Vocab({**base, "d": 3}))
    assert "'b': 2 against 1" in tokenizer_difference(Vocab(base), Vocab({"a": 0, "b": 2, "c": 1}))
    assert "eos_token_id 2 against the student's 0" in tokenizer_difference(Vocab(base), Vocab(base, eos=2))
