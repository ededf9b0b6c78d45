"""The offline tiny model builder: builds, reloads, renders ChatML, splits digits, runs forward."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rlsys.data.task import tokenizer_texts  # noqa: E402
from rlsys.models.tiny import CHAT_TEMPLATE, build_tiny_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0, texts=tokenizer_texts())


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_dir)


def test_builds_and_reloads(tiny_dir, tokenizer):
    assert (tiny_dir / "model.safetensors").exists()
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    cfg = model.config
    assert cfg.model_type == "qwen2"
    assert cfg.hidden_size // cfg.num_attention_heads == 64  # vLLM CPU attention
    assert cfg.vocab_size == len(tokenizer) < 1000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert cfg.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    gen = json.loads((tiny_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tokenizer.eos_token_id


def test_same_seed_same_weights(tmp_path, tiny_dir):
    from safetensors.torch import load_file

    again = build_tiny_model(tmp_path / "again", seed=0, texts=tokenizer_texts())
    a, b = load_file(tiny_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_chat_template(tokenizer):
    assert tokenizer.chat_template == CHAT_TEMPLATE
    msgs = [{"role": "user", "content": "What is 37 + 48?"}, {"role": "assistant", "content": "85"}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>user\nWhat is 37 + 48?<|im_end|>\n<|im_start|>assistant\n85<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nWhat is 37 + 48?<|im_end|>\n<|im_start|>assistant\n"
    # The generation block marks the assistant tokens (answer + <|im_end|>) for the SFT loss mask.
    enc = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "85<|im_end|>"
    # Special tokens are single tokens.
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tokenizer(special, add_special_tokens=False)["input_ids"]) == 1


def test_task_chat_documents_match_the_template(tokenizer):
    from rlsys.data.task import ArithmeticTask

    task = ArithmeticTask(seed=0, max_operand=20, heldout_size=50, lines_per_document=3)
    chat_docs = [d for d in task.pretrain_texts("heldout") if d.startswith("<|im_start|>")]
    assert chat_docs
    doc = chat_docs[0]
    turns = []
    for chunk in doc.split("<|im_start|>user\n")[1:]:
        question, rest = chunk.split("<|im_end|>\n<|im_start|>assistant\n")
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": rest.split("<|im_end|>")[0]}]
    assert tokenizer.apply_chat_template(turns, tokenize=False) == doc


def test_digits_are_single_tokens(tokenizer):
    for text in ("What is 1234 + 5678? 6912", "37 - 48 = -11", "x9876543210y"):
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
        digit_tokens = [t for t in tokens if any(c.isdigit() for c in t)]
        assert all(len(t) == 1 for t in digit_tokens), tokens
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_forward_and_generate(tiny_dir, tokenizer):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    enc = tokenizer([prompt], return_tensors="pt")
    out = model(**enc, labels=enc["input_ids"])
    assert out.logits.shape == (1, enc["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(out.loss)
    gen = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert gen.shape[1] <= enc["input_ids"].shape[1] + 3


def test_llama_arch_and_shape_checks(tmp_path):
    path = build_tiny_model(tmp_path / "llama", arch="llama", texts=["What is 1 + 2? 3"] * 20)
    model = transformers.AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama"
    with pytest.raises(ValueError, match="64"):
        build_tiny_model(tmp_path / "bad", hidden_size=128, num_heads=4, texts=tokenizer_texts())
    with pytest.raises(ValueError, match="arch"):
        build_tiny_model(tmp_path / "bad", arch="gpt2", texts=tokenizer_texts())
