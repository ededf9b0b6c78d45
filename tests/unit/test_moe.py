"""Mixture-of-experts models: the tiny Qwen3-MoE, its routers found and their load-balancing loss, and weights
in the format vLLM loads (one tensor per expert, as checkpoints hold them)."""
import pytest
import torch

from rlsys.algorithms.load_balancing import expert_shares, load_balancing_loss
from rlsys.engine.moe import captured_router_logits, router_terms, routing_of


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    import transformers

    from rlsys.data.task import tokenizer_texts
    from rlsys.models.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("moe") / "m", texts=tokenizer_texts(), num_experts=4,
                              experts_per_token=2)
    return folder, transformers.AutoModelForCausalLM.from_pretrained(folder)


def test_tiny_moe_splits_the_dense_mlp_over_its_experts(moe):
    _, model = moe
    config = model.config
    assert type(model).__name__ == "Qwen3MoeForCausalLM"
    assert (config.num_experts, config.num_experts_per_tok, config.moe_intermediate_size) == (4, 2, 256)


def test_the_model_switch_composes_an_moe():
    from rlsys.config.compose import compose_job

    cfg = compose_job("grpo", ["model=tiny_moe"])
    assert (cfg.model.tiny.num_experts, cfg.model.tiny.experts_per_token) == (4, 2)


def test_load_balancing_loss_is_transformers_own_and_top_k_when_even(moe):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

    _, model = moe
    routing = routing_of(model)
    assert routing.top_k == 2 and routing.aux_loss_coef == pytest.approx(0.001)
    assert routing_of(model, aux_loss_coef=0.1).aux_loss_coef == 0.1
    ids, mask = torch.randint(0, model.config.vocab_size, (2, 12)), torch.ones(2, 12)
    mask[1, 7:] = 0
    with captured_router_logits(model, routing) as routers:
        expected = model(input_ids=ids, attention_mask=mask, output_router_logits=True).aux_loss
    assert len(routers.logits) == model.config.num_hidden_layers
    torch.testing.assert_close(load_balancing_loss(routers.logits, 2, mask), expected)
    aux, metrics = router_terms(routers, routing, mask, share=0.5)
    torch.testing.assert_close(aux, 0.001 * 0.5 * expected)
    assert metrics["aux_loss"] == pytest.approx(0.5 * expected.item())
    even = [torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]) * 50]  # two tokens, each to its own pair
    assert load_balancing_loss(even, 2).item() == pytest.approx(2.0, abs=1e-3)
    assert expert_shares(even, 2)[0].tolist() == [0.25] * 4


def test_a_dense_model_has_no_routing(tmp_path):
    from tests.unit.test_gpu_layouts import tiny_causal_lm

    assert routing_of(tiny_causal_lm()) is None


def test_weights_go_out_named_as_the_checkpoint_names_them(moe):
    from safetensors import safe_open

    from rlsys.engine.weights import hf_weight_meta, iter_hf_weights

    folder, model = moe
    weights = dict(iter_hf_weights(model))
    with safe_open(str(folder / "model.safetensors"), "pt") as saved:
        assert set(weights) == set(saved.keys()) | {"lm_head.weight"}  # tied: sent under both names
        for name in saved.keys():
            assert torch.equal(weights[name], saved.get_tensor(name)), name
    assert "model.layers.0.mlp.experts.3.gate_proj.weight" in weights  # in memory: one fused gate_up_proj
    assert [(n, t.dtype, tuple(t.shape)) for n, t in iter_hf_weights(model)] == hf_weight_meta(model)
