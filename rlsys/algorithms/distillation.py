"""On-policy distillation: the teacher grades every token the student sampled.

The student's samples are its own, so log p_student(x_t) - log p_teacher(x_t) at each sampled token is a
one-sample estimate of the reverse KL, KL(student || teacher), at that position. Its negative is the token's
advantage: tokens the teacher finds likelier than the student did are pushed up, the others down, which pulls
the student towards the teacher's modes rather than spreading it over all of them (the forward KL's failure).
"""
from __future__ import annotations

import torch

from rlsys.algorithms.masked import masked_mean


def reverse_kl(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] log p_student - log p_teacher on the trained tokens; 0 elsewhere, and where either logprob is
    missing (NaN: a token the sampler reported none for, an episode's observations)."""
    return torch.where(graded(student_logp, teacher_logp, mask), student_logp - teacher_logp,
                       torch.zeros_like(student_logp))


def graded(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: the tokens the teacher's signal reaches (trained, with both logprobs known)."""
    return mask.bool() & ~student_logp.isnan() & ~teacher_logp.isnan()


def teacher_advantages(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor,
                       coef: float) -> torch.Tensor:
    """[B, T] per-token advantage: -coef x the reverse KL (no discounting: each token answers for itself)."""
    return -coef * reverse_kl(student_logp, teacher_logp, mask)


def distill_metrics(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    reached = graded(student_logp, teacher_logp, mask)
    return {"distill/reverse_kl": masked_mean(reverse_kl(student_logp, teacher_logp, mask), reached).item(),
            "distill/teacher_logp_mean": masked_mean(teacher_logp.nan_to_num(0.0), reached).item(),
            "distill/student_logp_mean": masked_mean(student_logp.nan_to_num(0.0), reached).item()}
