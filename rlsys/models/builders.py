"""Build models from config: causal LM (optionally with LoRA), value and reward models, tokenizer; clear errors."""
from __future__ import annotations

from pathlib import Path

import torch

from rlsys.errors import ModelError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return DTYPES[name]


def check_model_dir(path: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"model folder '{path}' does not exist. Give model.path a Hugging Face model folder "
                         "(config.json + weights), or leave it empty to build a tiny model.")
    if not (folder / "config.json").exists():
        raise ModelError(f"'{path}' has no config.json, so it is not a Hugging Face model folder.")
    return folder


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    check_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs one; EOS is what most causal LMs use
    return tokenizer


def attention(attn_implementation: str | None) -> dict:
    """from_pretrained's attention kernel: transformers' default (SDPA) unless asked, e.g. flash_attention_2, with
    which packed micro-batches run as varlen rows."""
    return {"attn_implementation": attn_implementation} if attn_implementation else {}


def load_causal_lm(path: str, *, dtype: torch.dtype, gradient_checkpointing: bool = False, lora=None,
                   attn_implementation: str | None = None):
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **attention(attn_implementation))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora is not None and lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
    return model


def load_value_model(path: str, *, dtype: torch.dtype, gradient_checkpointing: bool = False,
                     attn_implementation: str | None = None):
    """A critic: the causal LM's body with a one-output head on every token (value of the state)."""
    from transformers import AutoModelForTokenClassification

    check_model_dir(path)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1, dtype=dtype,
                                                            **attention(attn_implementation))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def load_reward_model(path: str, *, dtype: torch.dtype, pad_token_id: int, gradient_checkpointing: bool = False):
    """A reward model: a one-output head on the last token (AutoModelForSequenceClassification).

    From a causal LM the head starts fresh; a trained reward model folder loads as it is.
    """
    from transformers import AutoModelForSequenceClassification

    check_model_dir(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
    model.config.pad_token_id = pad_token_id  # how the head finds each sequence's last token
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model
