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
    import json

    folder = Path(path).expanduser()
    if folder.is_file():
        raise ModelError(f"model path '{path}' is a file; give the folder that holds config.json and the weights"
                         f"{' (' + str(folder.parent) + ')' if (folder.parent / 'config.json').exists() else ''}.")
    if not folder.is_dir():
        raise ModelError(f"model folder '{path}' does not exist. Give model.path a Hugging Face model folder "
                         "(config.json + weights), or leave it empty to build a tiny model.")
    if not (folder / "config.json").exists():
        raise ModelError(f"'{path}' has no config.json, so it is not a Hugging Face model folder.")
    try:
        json.loads((folder / "config.json").read_text())
    except ValueError as err:
        raise ModelError(f"'{folder / 'config.json'}' is not valid JSON ({err}); the folder is damaged or was "
                         "not fully written: copy or save the model again.") from None
    return folder


def lean_transformers() -> None:
    """transformers imports scikit-learn for assisted generation and scipy for vision losses, which language models
    never use (about 1.5 CPU-seconds in every process); called before transformers loads its models, it skips both."""
    import sys

    if "transformers.generation" not in sys.modules:
        import transformers.utils

        transformers.utils.is_sklearn_available = lambda: False
        transformers.utils.is_scipy_available = lambda: False


# tokenizers that declare themselves plain `tokenizers` ones load without transformers' model registry (3 s)
PLAIN_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def declares_plain_tokenizer(folder: Path) -> bool:
    import json

    try:
        declared = json.loads((folder / "tokenizer_config.json").read_text() or "{}").get("tokenizer_class")
    except (OSError, ValueError, AttributeError):  # none, or damaged: AutoTokenizer says what is wrong
        return False
    return declared in PLAIN_TOKENIZERS and (folder / "tokenizer.json").is_file()


def load_tokenizer(path: str):
    lean_transformers()
    folder = check_model_dir(path)
    if declares_plain_tokenizer(folder):
        from transformers import PreTrainedTokenizerFast as Tokenizer
    else:
        from transformers import AutoTokenizer as Tokenizer
    tokenizer = Tokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs one; EOS is what most causal LMs use
    return tokenizer


# markers chat templates end a turn with (ChatML, Llama 3, Phi 3, Gemma, Llama 2)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>")


def end_of_turn_ids(tokenizer) -> list[int]:
    """Every token that ends the assistant's turn: EOS, those in generation_config.json, and the end-of-turn
    marker the chat template writes (a base model fine-tuned on ChatML ends turns with <|im_end|>, not its EOS)."""
    import json

    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    config = Path(tokenizer.name_or_path or "") / "generation_config.json"
    if config.is_file():
        eos = json.loads(config.read_text() or "{}").get("eos_token_id")
        ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    vocab = tokenizer.get_vocab()
    ids += [vocab[marker] for marker in END_OF_TURN if marker in template and marker in vocab]
    return list(dict.fromkeys(ids))


def attention(attn_implementation: str | None) -> dict:
    """from_pretrained's attention kernel: transformers' default (SDPA) unless asked, e.g. flash_attention_2, with
    which packed micro-batches run as varlen rows."""
    return {"attn_implementation": attn_implementation} if attn_implementation else {}


def load_causal_lm(path: str, *, dtype: torch.dtype, gradient_checkpointing: bool = False, lora=None,
                   attn_implementation: str | None = None):
    lean_transformers()
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
    lean_transformers()
    from transformers import AutoModelForTokenClassification

    check_model_dir(path)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1, dtype=dtype,
                                                            **attention(attn_implementation))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def load_reward_model(path: str, *, dtype: torch.dtype, pad_token_id: int, gradient_checkpointing: bool = False,
                      heads: int = 1):
    """A reward model: `heads` outputs on the last token (AutoModelForSequenceClassification), one score per
    head of an ensemble.

    From a causal LM the heads start fresh; a trained reward model folder loads as it is, with its own heads.
    """
    lean_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification

    check_model_dir(path)
    config = AutoConfig.from_pretrained(path)
    if any(a.endswith("ForSequenceClassification") for a in (config.architectures or [])):
        heads = config.num_labels
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=heads, dtype=dtype)
    model.config.pad_token_id = pad_token_id  # how the head finds each sequence's last token
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model
