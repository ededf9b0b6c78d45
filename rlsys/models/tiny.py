"""A tiny causal LM and its tokenizer, built offline (no model hub).

:func:`build_tiny_model` trains a small byte-level BPE tokenizer (digits always split into
single-digit tokens, ChatML special tokens and chat template) on the text it is given (for the
embedded arithmetic task: `rlsys.data.task.tokenizer_texts`), builds a randomly initialised Qwen2
(or Llama) ``ForCausalLM`` sized to that vocabulary and saves both with ``save_pretrained``, so that
``AutoModelForCausalLM.from_pretrained(path)``, ``AutoTokenizer.from_pretrained(path)``
and vLLM load the folder like any hub checkpoint.
"""

from __future__ import annotations

import functools
import pathlib
import shutil
import tempfile
from typing import Iterable

from rlsys.config.choices import TINY_ARCHITECTURES

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
CACHE_FORMAT = 1  # bump when what build_tiny_model writes changes: cached models are built again

# ChatML, with tools the way Qwen2.5 / Hermes templates write them: the tool schemas in a system turn inside
# <tools></tools>, each call as <tool_call>{"name": ..., "arguments": ...}</tool_call> in the assistant's turn,
# results as <tool_response> blocks in a user turn. The {% generation %} block marks the assistant tokens
# (content + <|im_end|>) so that apply_chat_template(..., return_assistant_tokens_mask=True) gives the SFT mask.
CHAT_TEMPLATE = (
    "{% if tools %}"
    "{{ '<|im_start|>system\\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ '<tools>' }}{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}{{ '\\n</tools><|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and tools and loop.first %}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] }}"
    "{% if message.tool_calls %}{% for call in message.tool_calls %}"
    "{% if call.function is defined %}{% set call = call.function %}{% endif %}"
    "{% if not loop.first or message['content'] %}{{ '\\n' }}{% endif %}"
    "{{ '<tool_call>\\n{\"name\": \"' + call.name + '\", \"arguments\": ' }}"
    "{{ call.arguments if call.arguments is string else (call.arguments | tojson) }}{{ '}\\n</tool_call>' }}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{% if loop.first or loop.previtem['role'] != 'tool' %}{{ '<|im_start|>user' }}{% endif %}"
    "{{ '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{% if loop.last or loop.nextitem['role'] != 'tool' %}{{ '<|im_end|>\\n' }}{% endif %}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)



def render_chatml(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Plain-Python rendering of :data:`CHAT_TEMPLATE` (for tokenizer training text)."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def render_template(messages: list[dict], tools: list[dict] | None = None) -> str:
    """:data:`CHAT_TEMPLATE`'s rendering (with tools), before any tokenizer is trained: a throwaway one renders."""
    return _bare_tokenizer().apply_chat_template(messages, tools=tools, tokenize=False)


@functools.lru_cache(maxsize=1)
def _bare_tokenizer():
    return train_tokenizer(["."], vocab_size=len(SPECIAL_TOKENS) + 256)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 320):
    """Byte-level BPE with single-digit tokens, wrapped as a ChatML PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        additional_special_tokens=[IM_START],
        model_max_length=2048,
        padding_side="left",  # generation batches; trainers can override per call
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    output_dir: str | pathlib.Path,
    *,
    texts: list[str],
    arch: str = "qwen2",
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 512,
    max_position_embeddings: int = 512,
    seed: int = 0,
    vocab_size: int = 320,
    rope_theta: float = 10000.0,
    tie_word_embeddings: bool = True,
    num_experts: int = 0,
    experts_per_token: int = 2,
) -> pathlib.Path:
    """Train the tokenizer, build a randomly initialised causal LM and save both to ``output_dir``.

    ``hidden_size / num_heads`` must be 64 (the head size vLLM's CPU attention supports).
    ``texts`` trains the tokenizer (`rlsys.data.task.tokenizer_texts` for the embedded task).
    Built once per set of arguments into the cache (`tiny_model_cache`), and copied from there after.
    Returns the output directory.
    """
    if arch not in TINY_ARCHITECTURES:
        raise ValueError(f"Unknown arch {arch!r}; allowed: {', '.join(TINY_ARCHITECTURES)}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    if hidden_size // num_heads != 64:
        raise ValueError(f"head_dim = hidden_size / num_heads = {hidden_size // num_heads}; vLLM's CPU backend "
                         "needs 64")
    if num_experts and not 1 <= experts_per_token <= num_experts:
        raise ValueError(f"experts_per_token must be between 1 and num_experts ({num_experts}), got {experts_per_token}")
    settings = dict(texts=texts, arch=arch, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                    intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings, seed=seed,
                    vocab_size=vocab_size, rope_theta=rope_theta, tie_word_embeddings=tie_word_embeddings)
    if num_experts:  # kept out of a dense model's cache key, so dense caches stay valid
        settings.update(num_experts=num_experts, experts_per_token=experts_per_token)
    cache = tiny_model_cache(settings)
    if cache is not None and not (cache / "config.json").exists():
        staging = pathlib.Path(tempfile.mkdtemp(prefix=".building-", dir=cache.parent))
        try:
            _build(staging, **settings)
            staging.rename(cache)  # atomic: when another job's copy got there first, that one is kept
        except OSError:
            pass  # the cache cannot take it: built below where it is asked for
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if cache is None or not (cache / "config.json").exists():
        return _build(pathlib.Path(output_dir), **settings)
    shutil.copytree(cache, output_dir, dirs_exist_ok=True)
    return pathlib.Path(output_dir)


def tiny_model_cache(settings: dict) -> pathlib.Path | None:
    """Where the tiny model for these settings is kept: RLSYS_CACHE_DIR (default ~/.cache/rlsys)/tiny/<hash>;
    None when RLSYS_CACHE_DIR is empty or the folder cannot be written (then every job builds its own)."""
    import hashlib
    import json
    import os
    from importlib.metadata import version

    root = os.environ.get("RLSYS_CACHE_DIR", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "rlsys"))
    if not root:
        return None
    key = json.dumps([settings, version("transformers"), CACHE_FORMAT], sort_keys=True)
    folder = pathlib.Path(root).expanduser() / "tiny" / hashlib.sha256(key.encode()).hexdigest()[:24]
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


def _build(out: pathlib.Path, *, texts: list[str], arch: str, hidden_size: int, num_layers: int, num_heads: int,
           intermediate_size: int, max_position_embeddings: int, seed: int, vocab_size: int, rope_theta: float,
           tie_word_embeddings: bool, num_experts: int = 0, experts_per_token: int = 2) -> pathlib.Path:
    import torch
    import transformers

    from rlsys.models.builders import lean_transformers

    lean_transformers()
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = train_tokenizer(texts, vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        rope_theta=rope_theta,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=ids[ENDOFTEXT],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[ENDOFTEXT],
        torch_dtype="float32",
    )
    if num_experts:
        # Qwen3-MoE: every layer's MLP is `num_experts` experts, each token routed to `experts_per_token` of them;
        # an expert's MLP is the dense one split that many ways, so a token's compute stays the dense model's.
        config = transformers.Qwen3MoeConfig(
            **common, head_dim=hidden_size // num_heads, num_experts=num_experts, num_experts_per_tok=experts_per_token,
            moe_intermediate_size=max(1, intermediate_size // experts_per_token), decoder_sparse_step=1,
            mlp_only_layers=[], norm_topk_prob=True, router_aux_loss_coef=0.001)
        model_cls = transformers.Qwen3MoeForCausalLM
    elif arch == "qwen2":
        config = transformers.Qwen2Config(**common, use_sliding_window=False)
        model_cls = transformers.Qwen2ForCausalLM
    else:
        config = transformers.LlamaConfig(**common, head_dim=hidden_size // num_heads)
        model_cls = transformers.LlamaForCausalLM

    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.eos_token_id = ids[IM_END]
    model.generation_config.pad_token_id = ids[ENDOFTEXT]
    model.generation_config.bos_token_id = ids[ENDOFTEXT]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
