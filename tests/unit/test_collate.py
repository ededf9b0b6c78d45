"""Chat masks token by token, packing, padding, and the list <-> tensor layout of RL batches."""
import pytest

from rlsys.data.collate import IGNORE, encode_chat, pack_examples, pack_texts, pad, render_ids
from rlsys.data.task import tokenizer_texts
from rlsys.engine.batch import response_values, to_tensors
from rlsys.models.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny"), texts=tokenizer_texts()))


def test_assistant_only_labels_token_by_token(tokenizer):
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"},
                {"role": "user", "content": "What is 4 + 4?"}, {"role": "assistant", "content": "8"}]
    ids, labels = encode_chat(tokenizer, messages, max_length=256)
    kept = [tokenizer.decode([t]) for t, label in zip(ids, labels) if label != IGNORE]
    assert kept == ["5", "<|im_end|>", "\n", "8", "<|im_end|>", "\n"] or kept == ["5", "<|im_end|>", "8", "<|im_end|>"]
    # every labelled token is the token itself, everything else (system, user turns, headers) is masked
    assert all(label in (IGNORE, token) for token, label in zip(ids, labels))
    prompt_len = len(render_ids(tokenizer, messages[:1], add_generation_prompt=True))
    assert all(label == IGNORE for label in labels[:prompt_len])
    assert labels[prompt_len] == ids[prompt_len] and tokenizer.decode([ids[prompt_len]]) == "5"


def test_llama3_style_template_masks_each_assistant_turn(tmp_path):
    from tests.unit.test_end_of_turn import LLAMA3_TEMPLATE
    from tests.unit.test_end_of_turn import tokenizer as make_tokenizer

    tok = make_tokenizer(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                         "<|end_of_text|>", LLAMA3_TEMPLATE)
    messages = [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5"},
                {"role": "user", "content": "4+4?"}, {"role": "assistant", "content": "8"}]
    ids, labels = encode_chat(tok, messages, max_length=256)
    kept = tok.convert_ids_to_tokens([t for t, label in zip(ids, labels) if label != IGNORE])
    assert kept == ["5", "<|eot_id|>", "8", "<|eot_id|>"]


def test_a_template_that_rewrites_earlier_turns_is_a_clear_error(tokenizer):
    from rlsys.errors import DataError

    rewriting = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # like templates that drop the reasoning of past assistant turns: only the last one is rendered in full
    rewriting.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
                               "{{ m['content'] if loop.last or m['role'] != 'assistant' else '...' }}"
                               "{{ '<|im_end|>\\n' }}{% endfor %}"
                               "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    messages = [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "5"},
                {"role": "user", "content": "4 + 4?"}, {"role": "assistant", "content": "8"}]
    with pytest.raises(DataError, match="rewrites history"):
        encode_chat(rewriting, messages, max_length=256)


def test_truncation_keeps_alignment(tokenizer):
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]
    ids, labels = encode_chat(tokenizer, messages, max_length=4)
    assert len(ids) == len(labels) == 4


def test_pack_texts_makes_full_blocks_with_eos():
    blocks = pack_texts([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=4, eos_id=0)
    assert blocks == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]


def test_pack_examples_respects_max_length():
    examples = [([1] * 3, [1] * 3), ([2] * 4, [2] * 4), ([3] * 2, [3] * 2)]
    packed = pack_examples(examples, max_length=6)
    assert [len(ids) for ids, _, _ in packed] == [3, 6]
    ids, labels, positions = packed[1]
    assert ids == [2, 2, 2, 2, 3, 3]
    assert positions == [0, 1, 2, 3, 0, 1]  # positions restart: the second example does not see the first
    assert labels == [IGNORE, 2, 2, 2, IGNORE, 3]


def test_pad_left_and_right():
    assert pad([[1, 2], [3]], 0).tolist() == [[1, 2], [3, 0]]
    assert pad([[1, 2], [3]], 0, left=True).tolist() == [[1, 2], [0, 3]]


def test_rl_batch_places_token_fields_at_predicting_positions():
    batch = {"prompt_ids": [[10, 11, 12], [20]], "response_ids": [[13, 14], [21, 22, 23]],
             "advantages": [[1.0, 2.0], [3.0, 4.0, 5.0]]}
    t, layout = to_tensors(batch, pad_id=0)
    assert t["input_ids"].tolist() == [[10, 11, 12, 13, 14, 20, 21, 22, 23]]  # packed, no padding
    assert t["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3]]
    # position t predicts input_ids[t + 1]: response token 13 is predicted at position 2
    assert t["response_mask"].tolist() == [[0, 0, 1, 1, 0, 1, 1, 1]]
    assert t["advantages"].tolist() == [[0, 0, 1, 2, 0, 3, 4, 5]]
    assert response_values(t["advantages"], layout) == batch["advantages"]


def test_rows_are_cut_at_row_tokens_and_padding_is_a_sequence_of_its_own():
    batch = {"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]], "labels": [[1, 2, 3], [4, 5], [6, 7, 8, 9]]}
    t, _ = to_tensors(batch, pad_id=0, row_tokens=5)
    assert t["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert t["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    # a sequence's first token is never a target (the token before it belongs to another sequence)
    assert t["labels"].tolist() == [[2, 3, IGNORE, 5], [7, 8, 9, IGNORE]]
