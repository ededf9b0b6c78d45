"""Full, Hugging Face-named weights out of a (possibly ZeRO-3 sharded, possibly LoRA) model, and buckets of them.

Used to save HF checkpoints and to send weights to rollout engines. Every rank must iterate (ZeRO-3
gathers are collectives); only the caller's rank 0 keeps what it receives.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Iterator

import torch


def gathered(params: list[torch.nn.Parameter], zero3: bool):
    if not zero3:
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def is_peft(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config")


def _merged_lora_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Base weights with each LoRA delta (B @ A * scale) added, named as in the base model."""
    from peft.tuners.lora import LoraLayer

    deltas = {name: module.get_delta_weight(module.active_adapters[0])
              for name, module in model.named_modules() if isinstance(module, LoraLayer) and module.merged is False}
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        clean = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        if owner in deltas and name.endswith(".weight"):
            tensor = tensor + deltas[owner].to(tensor.dtype)
        yield clean, tensor.detach().clone()


def iter_hf_weights(model: torch.nn.Module, zero3: bool = False,
                    on_device: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every weight, tied ones included under each of their names; on CPU, or with
    on_device where the model is (a copy under ZeRO-3, whose gathered weights are freed after each one)."""
    place = (lambda t: t.clone() if zero3 else t) if on_device else (lambda t: t.to("cpu", copy=True))
    if is_peft(model):
        with gathered(list(model.parameters()), zero3):  # LoRA deltas need A, B and the base together
            yield from ((n, t if on_device else t.cpu()) for n, t in _merged_lora_weights(model))
        return
    for name, param in model.named_parameters(remove_duplicate=False):
        with gathered([param], zero3):
            yield name, place(param.detach())


def buckets(items: Iterator[tuple[str, torch.Tensor]], bucket_bytes: int) -> Iterator[dict[str, torch.Tensor]]:
    """Group tensors into dicts of about bucket_bytes each (a tensor larger than that gets its own)."""
    bucket: dict[str, torch.Tensor] = {}
    size = 0
    for name, tensor in items:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = {}, 0
        bucket[name] = tensor
        size += nbytes
    if bucket:
        yield bucket


def full_state_dict(model: torch.nn.Module, zero3: bool = False) -> dict[str, torch.Tensor]:
    return dict(iter_hf_weights(model, zero3))


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain transformers model under a LoRA wrapper (for its config and save_pretrained)."""
    return model.get_base_model() if is_peft(model) else model
