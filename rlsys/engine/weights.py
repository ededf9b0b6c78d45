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


def _hf_params(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter, torch.nn.Module | None]]:
    """(Hugging Face name, parameter, its unmerged LoRA layer or None) for every weight a checkpoint holds, tied
    ones under each of their names; LoRA's own A and B are not weights of the base model."""
    if not is_peft(model):
        for name, param in model.named_parameters(remove_duplicate=False):
            yield name, param, None
        return
    from peft.tuners.lora import LoraLayer

    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer) and m.merged is False}
    for name, param in model.named_parameters(remove_duplicate=False):
        if "lora_" in name:
            continue
        owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        clean = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        yield clean, param, layers.get(owner) if name.endswith(".weight") else None


def checkpoint_format(model: torch.nn.Module):
    """(name, tensor) -> {checkpoint name: tensor}. transformers keeps some weights fused in memory (a MoE layer's
    experts as one 3D tensor per projection) and saves them as checkpoints name them (a tensor per expert and
    projection), which is what vLLM loads; other weights pass through unchanged."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # a transformers without load-time conversions stores weights as it saves them
        return lambda name, tensor: {name: tensor}
    base = base_model(model)
    return lambda name, tensor: revert_weight_conversion(base, {name: tensor})


def hf_weight_meta(model: torch.nn.Module) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(name, dtype, full shape) of what iter_hf_weights yields, in its order, without gathering anything."""
    convert = checkpoint_format(model)
    return [(name, tensor.dtype, tuple(tensor.shape)) for hf_name, param, _ in _hf_params(model)
            for name, tensor in convert(hf_name, torch.empty(getattr(param, "ds_shape", param.shape),
                                                             dtype=param.dtype, device="meta")).items()]


def _gathered_copy(params: list[torch.nn.Parameter], zero3: bool, copy) -> torch.Tensor:
    """copy() with `params` gathered. Under ZeRO-3 on GPU the gather is issued on the default stream and its
    result handed to the caller's stream: the gathers are collectives every rank must issue alike, and vLLM's
    packed NCCL sender pulls weights inside a side stream of its own on rank 0 only (the pattern of TRL
    PR #6798's deadlock with more than 2 ranks)."""
    if not (zero3 and torch.cuda.is_available()):
        with gathered(params, zero3):
            return copy()
    caller, default = torch.cuda.current_stream(), torch.cuda.default_stream()
    with torch.cuda.stream(default), gathered(params, zero3):
        tensor = copy()
    caller.wait_stream(default)
    tensor.record_stream(caller)
    return tensor


def iter_hf_weights(model: torch.nn.Module, zero3: bool = False,
                    on_device: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, full tensor) for every weight, tied ones included under each of their names, LoRA deltas
    (B @ A * scale) merged in; on CPU, or with on_device where the model is (a copy under ZeRO-3, whose gathered
    weights are freed after each one). One weight (with its LoRA A and B) is gathered at a time."""
    def place(tensor: torch.Tensor, fresh: bool) -> torch.Tensor:
        if not on_device:
            return tensor.to("cpu", copy=True)
        return tensor.clone() if zero3 and not fresh else tensor

    convert = checkpoint_format(model)
    for name, param, lora in _hf_params(model):
        if lora is None:
            tensor = _gathered_copy([param], zero3, lambda: place(param.detach(), False))
        else:
            adapter = [p for n, p in lora.named_parameters() if "lora_" in n]
            merged = lambda: param.detach() + lora.get_delta_weight(lora.active_adapters[0]).to(param.dtype)
            tensor = _gathered_copy([param, *adapter], zero3, lambda: place(merged(), True))
        yield from convert(name, tensor).items()


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


def largest_weight_bytes(model: torch.nn.Module) -> int:
    """The size of the largest full weight (a transfer buffer must hold it whole)."""
    return max(torch.Size(shape).numel() * dtype.itemsize for _, dtype, shape in hf_weight_meta(model))


def full_state_dict(model: torch.nn.Module, zero3: bool = False) -> dict[str, torch.Tensor]:
    return dict(iter_hf_weights(model, zero3))


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain transformers model under a LoRA wrapper (for its config and save_pretrained)."""
    return model.get_base_model() if is_peft(model) else model
