"""End-of-turn tokens come from the tokenizer's chat template and generation_config, not only its EOS: a base
model fine-tuned on ChatML ends turns with <|im_end|>, Llama 3 with <|eot_id|>."""
import json

from rlsys.models.builders import end_of_turn_ids

LLAMA3_TEMPLATE = ("{{ '<|begin_of_text|>' }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
                   "'<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")


def tokenizer(specials: list[str], eos: str, template: str, folder=None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=" "))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, additional_special_tokens=specials)
    fast.chat_template = template
    if folder is not None:
        fast.save_pretrained(folder)
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(folder)
    return fast


def test_qwen_base_style_chatml_stops_at_im_end_as_well_as_eos():
    from rlsys.models.tiny import CHAT_TEMPLATE

    tok = tokenizer(["<|im_start|>", "<|im_end|>"], "<|endoftext|>", CHAT_TEMPLATE)
    ids = end_of_turn_ids(tok)
    assert ids == [tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")]


def test_llama3_style_stops_at_eot_id_and_reads_generation_config(tmp_path):
    tok = tokenizer(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                    "<|end_of_text|>", LLAMA3_TEMPLATE, tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [500, 501]}))
    eos, eot = tok.convert_tokens_to_ids("<|end_of_text|>"), tok.convert_tokens_to_ids("<|eot_id|>")
    assert end_of_turn_ids(tok) == [eos, 500, 501, eot]


def test_a_marker_the_template_does_not_use_is_no_stop():
    tok = tokenizer(["<|im_end|>"], "<|end_of_text|>", LLAMA3_TEMPLATE.replace("<|eot_id|>", "\\n"))
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids("<|end_of_text|>")]
