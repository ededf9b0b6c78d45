"""What each job trains and evaluates on: the user's files when `data.train` / `data.eval` are set, else the
embedded arithmetic task. Rows are tokenised here, on the controller, and travel to the ranks as lists.
"""
from __future__ import annotations

from rlsys.data.collate import encode_chat, pack_examples, pack_texts, render_ids, require_chat_template
from rlsys.data.sources import as_messages, load_rows
from rlsys.data.task import ArithmeticTask
from rlsys.errors import DataError


def embedded_task(cfg) -> ArithmeticTask:
    t = cfg.data.task
    return ArithmeticTask(seed=t.seed, heldout_size=t.heldout_size, min_operand=t.min_operand, max_operand=t.max_operand,
                          operations=tuple(t.operations))


def _user_rows(cfg, spec: str, required: list[str]) -> list[dict]:
    loaded = load_rows(spec, columns=dict(cfg.data.columns), required=required, split=cfg.data.split,
                       on_error=cfg.data.on_error)
    if loaded.skipped:
        print(f"data: skipped {loaded.skipped} malformed rows of {spec} (data.on_error=skip)")
    return loaded.rows


def pretrain_blocks(cfg, tokenizer, demonstrate=None) -> list[list[int]]:
    """Packed blocks of raw text; on the embedded task with an environment's `demonstrate(row) -> messages`,
    transcripts of its tool use too."""
    texts = ([str(r["text"]) for r in _user_rows(cfg, cfg.data.train, ["text"])] if cfg.data.train
             else embedded_task(cfg).pretrain_texts("train") + tool_transcripts(cfg, tokenizer, demonstrate))
    token_lists = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    blocks = pack_texts(token_lists, cfg.data.max_length, eos)
    if not blocks:
        raise DataError(f"the pretraining text holds fewer than data.max_length={cfg.data.max_length} tokens.")
    return blocks


def sft_examples(cfg, tokenizer, tools: list[dict] | None = None,
                 demonstrate=None) -> list[tuple[list[int], list[int]]]:
    """Chat examples; with an environment its `tools` are in every prompt, and on the embedded task the
    environment's demonstrations (`demonstrate(row) -> messages`, e.g. calculator calls) are the conversations."""
    require_chat_template(tokenizer, cfg.model.path or "")
    if cfg.data.train:
        conversations = [as_messages(r, f"row {i} of {cfg.data.train}")
                         for i, r in enumerate(_user_rows(cfg, cfg.data.train, []))]
    elif tools is not None and demonstrate is not None:  # as many as the run reaches
        rows = embedded_task(cfg).rl_prompts("train")[:cfg.trainer.max_steps * cfg.trainer.batch_size]
        conversations = [demonstrate(row) for row in rows]
    else:
        conversations = [c["messages"] for c in embedded_task(cfg).sft_conversations("train")]
    examples = [encode_chat(tokenizer, messages, cfg.data.max_length, tools) for messages in conversations]
    examples = [e for e in examples if any(label != -100 for label in e[1])]
    if not examples:
        raise DataError("no conversation has an assistant turn inside data.max_length tokens.")
    return pack_examples(examples, cfg.data.max_length) if cfg.data.packing else examples


def tool_transcripts(cfg, tokenizer, demonstrate) -> list[str]:
    """With an environment that demonstrates its tools, pretraining on the embedded task also reads transcripts
    of their use (as web text holds tool-use traces), one for every problem: the model learns to copy
    arguments and results before SFT teaches it when to call."""
    if demonstrate is None or tokenizer.chat_template is None:
        return []
    rows = embedded_task(cfg).rl_prompts("train")
    return [tokenizer.apply_chat_template(demonstrate(row), tokenize=False) for row in rows]


def prompt_rows(cfg, split: str) -> list[dict]:
    """Prompts with their verifiable answers and any extra columns (RL training and evaluation)."""
    spec = cfg.data.train if split == "train" else cfg.data.eval
    if spec:
        rows = _user_rows(cfg, spec, [])
        for index, row in enumerate(rows):
            # the prompt only: a `response` column is the reference answer, not part of the question
            messages = as_messages({k: v for k, v in row.items() if k != "response"}, f"row {index} of {spec}")
            if len(messages) > 1 and messages[-1]["role"] == "assistant":  # chat data: the answer is not the prompt
                row.setdefault("response", messages[-1]["content"])
                messages = messages[:-1]
            row["messages"] = messages
        return rows
    return embedded_task(cfg).rl_prompts("heldout" if split == "eval" else "train")


def encode_prompts(cfg, tokenizer, rows: list[dict]) -> list[list[int]]:
    """The rows' prompts as token ids. With data.on_error=skip, rows whose prompt is empty or leaves no room for
    the answer are taken out of `rows` (counted in the log); otherwise the first one stops the job."""
    require_chat_template(tokenizer, cfg.model.path or "")
    limit = cfg.data.max_length - cfg.rollout.max_new_tokens
    kept, encoded, skipped, total = [], [], 0, len(rows)
    for index, row in enumerate(rows):
        ids = render_ids(tokenizer, row["messages"], add_generation_prompt=True)
        problem = (f"prompt {index} is empty." if not any(m.get("content") for m in row["messages"]) else
                   f"prompt {index} has {len(ids)} tokens, more than data.max_length - rollout.max_new_tokens = "
                   f"{limit}. Raise data.max_length, shorten the prompt, or skip such rows with data.on_error=skip."
                   if len(ids) > limit else None)
        if problem and cfg.data.on_error != "skip":
            raise DataError(problem)
        if problem:
            skipped += 1
            continue
        kept.append(row)
        encoded.append(ids)
    if skipped:
        print(f"data: skipped {skipped} of {total} prompts that are empty or longer than {limit} tokens "
              f"(data.on_error=skip)")
        rows[:] = kept
    if not encoded:
        raise DataError(f"no prompt is left: all {total} are empty or longer than {limit} tokens.")
    return encoded


def response_ids(tokenizer, prompt_ids: list[int], messages: list[dict]) -> list[int]:
    """The tokens the assistant's last turn adds after the generation prompt, up to its end-of-turn token."""
    ids = render_ids(tokenizer, messages)[len(prompt_ids):]
    eos = tokenizer.eos_token_id
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def _answer_text(value) -> str:
    """A chosen / rejected entry: the answer text, or a conversation whose last turn is the answer."""
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    if not isinstance(value, str):
        raise DataError(f"a chosen / rejected entry must be a string or a list of messages, got {type(value).__name__}.")
    return value


def preference_pairs(cfg, tokenizer, split: str) -> list[dict]:
    """Preference pairs as token ids: {prompt_ids, chosen_ids, rejected_ids} (reward models and DPO)."""
    require_chat_template(tokenizer, cfg.model.path or "")
    spec = cfg.data.train if split == "train" else cfg.data.eval
    if spec:
        rows = _user_rows(cfg, spec, ["chosen", "rejected"])
    elif split == "eval":
        rows = embedded_task(cfg).preference_pairs("heldout")
    else:
        rows = embedded_task(cfg).preference_pairs("train", cfg.data.task.rejected_per_problem,
                                                   cfg.data.task.near_misses)
    pairs = encode_pairs(cfg, tokenizer, rows)
    if not pairs:
        raise DataError(f"no preference pairs in {spec or 'the embedded task'}.")
    return pairs


def near_miss_pairs(cfg, tokenizer) -> list[dict]:
    """The embedded task's held-out near misses (off by one, carry dropped) as pairs; none for the user's data."""
    if cfg.data.train or cfg.data.eval:
        return []
    return encode_pairs(cfg, tokenizer, embedded_task(cfg).near_miss_pairs("heldout"))


def encode_pairs(cfg, tokenizer, rows: list[dict]) -> list[dict]:
    pairs = []
    for index, row in enumerate(rows):
        prompt_ids, prompt = _prompt(tokenizer, row, f"preference pair {index}")
        sides = [_response(tokenizer, prompt_ids, prompt, row[k]) for k in ("chosen", "rejected")]
        _check_length(cfg, len(prompt_ids) + max(map(len, sides)), f"preference pair {index}")
        pairs.append({"prompt_ids": prompt_ids, "chosen_ids": sides[0], "rejected_ids": sides[1]})
    return pairs


def feedback_rows(cfg, tokenizer, split: str) -> list[dict]:
    """Unpaired feedback as token ids: {prompt_ids, response_ids, desirable} (KTO). A file with a `label`
    column (thumbs up / down: true / false) gives one row per line; preference pairs, such as the embedded
    task's, give a thumbs-up row for the chosen answer and a thumbs-down row for the rejected one."""
    spec = cfg.data.train if split == "train" else cfg.data.eval
    rows = _user_rows(cfg, spec, []) if spec else []
    if not rows or "label" not in rows[0]:
        pairs = preference_pairs(cfg, tokenizer, split)
        return [{"prompt_ids": p["prompt_ids"], "response_ids": p[side], "desirable": float(side == "chosen_ids")}
                for p in pairs for side in ("chosen_ids", "rejected_ids")]
    require_chat_template(tokenizer, cfg.model.path or "")
    out = []
    for index, row in enumerate(rows):
        where = f"row {index} of {spec}"
        missing = [c for c in ("response", "label") if row.get(c) is None]
        if missing:
            raise DataError(f"{where} has no {' or '.join(missing)}: feedback rows need prompt, response and label "
                            f"(map yours with data.columns.{missing[0]}=YOUR_COLUMN).")
        prompt_ids, prompt = _prompt(tokenizer, row, where)
        response = _response(tokenizer, prompt_ids, prompt, row["response"])
        _check_length(cfg, len(prompt_ids) + len(response), where)
        out.append({"prompt_ids": prompt_ids, "response_ids": response, "desirable": thumbs(row["label"], where)})
    if not out:
        raise DataError(f"no feedback rows in {spec}.")
    return out


def thumbs(label, where: str) -> float:
    """1.0 for a thumbs up, 0.0 for a thumbs down."""
    if isinstance(label, bool) or label in (0, 1):
        return float(label)
    text = str(label).strip().lower()
    if text in ("true", "1", "up", "yes", "good", "desirable"):
        return 1.0
    if text in ("false", "0", "down", "no", "bad", "undesirable"):
        return 0.0
    raise DataError(f"{where}: label {label!r} is not a thumbs up or down; use true / false (or 1 / 0).")


def _prompt(tokenizer, row: dict, where: str) -> tuple[list[int], list[dict]]:
    prompt = as_messages({"messages": row.get("messages"), "prompt": row.get("prompt")}, where)
    return render_ids(tokenizer, prompt, add_generation_prompt=True), prompt


def _response(tokenizer, prompt_ids: list[int], prompt: list[dict], answer) -> list[int]:
    return response_ids(tokenizer, prompt_ids, prompt + [{"role": "assistant", "content": _answer_text(answer)}])


def _check_length(cfg, tokens: int, where: str) -> None:
    if tokens > cfg.data.max_length:
        raise DataError(f"{where} has {tokens} tokens, more than data.max_length={cfg.data.max_length}. Raise "
                        f"data.max_length or shorten it.")
