"""What the RL controller hands the policy loss: the KL coefficient the controller holds now."""
import torch

from rlsys.algorithms import build_kl_controller
from rlsys.config.compose import compose_job
from rlsys.config.validate import to_typed
from rlsys.config.losses import PolicyLoss
from rlsys.engine.objectives import policy_objective


class FixedLogits(torch.nn.Module):
    """A 'model' whose next-token distribution is a learnable table: enough for the loss's arithmetic."""

    def __init__(self, width: int = 7, vocab: int = 11):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(1, width, vocab, generator=torch.Generator().manual_seed(0)))

    def forward(self, input_ids, **_):
        return type("Out", (), {"logits": self.table.expand(input_ids.shape[0], -1, -1)})()


def test_the_adaptive_coefficient_reaches_the_loss():
    cfg = to_typed(compose_job("grpo", ["algo.kl_coef=0.1", "algo.kl_controller=adaptive", "algo.kl_target=0.01",
                                        "algo.kl_horizon=10"]))
    a = cfg.algo
    controller = build_kl_controller(a.kl_controller, a.kl_coef, a.kl_target, a.kl_horizon)
    before = PolicyLoss.from_config(cfg, controller.value)
    controller.update(current_kl=1.0, n_steps=10)  # far above target: the coefficient grows
    after = PolicyLoss.from_config(cfg, controller.value)
    assert after.kl_coef > before.kl_coef == 0.1

    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7]])
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    batch = {"input_ids": ids, "position_ids": torch.arange(7)[None], "response_mask": mask,
             "advantages": mask * 0.5, "ref_logp": mask * -4.0}
    model = FixedLogits()
    loss_before, _ = policy_objective(model, batch, before)
    loss_after, metrics = policy_objective(model, batch, after)
    kl = metrics["kl_loss"]
    assert kl > 0
    expected_gap = (after.kl_coef - before.kl_coef) * kl
    assert abs((loss_after - loss_before).item() - expected_gap) < 1e-6
