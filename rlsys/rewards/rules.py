"""Verifiable rule rewards: answer extraction/normalisation and the built-in rule functions.

Every rule has the user-function signature ``fn(prompts, completions, **columns) -> list[float]``
so built-in rules and user rewards go through the same plumbing.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from rlsys.errors import RewardConfigError

RewardFn = Callable[..., list[float]]

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_BARE_NUMBER_RE = re.compile(rf"\s*(?:{_NUMBER})\s*")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_BOXED_RE = re.compile(r"\\boxed\s*\{")
_HASHES_RE = re.compile(r"####\s*([^\n]*)")
# Prefer a leading number ("is 42 apples." -> "42"), else the rest of the line.
_ANSWER_IS_RE = re.compile(rf"answer\s*(?:is\s*:?|:)\s*(\$?\s*(?:{_NUMBER})|[^\n]+)", re.IGNORECASE)
# Chat templates may leave end-of-turn tokens in decoded text (e.g. skip_special_tokens=False).
_END_OF_TURN_RE = re.compile(r"(?:\s*(?:<\|[^<>|]*\|>|</s>))+\s*$")

DEFAULT_FORMAT_PATTERN = rf"^\s*(?:{_NUMBER})\s*$"
# reasoning formats: <think>reasoning</think> then <answer>final answer</answer>
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_THINK_RE = re.compile(r"<think>.*?</think>", re.DOTALL)
THINK_ANSWER_PATTERN = r"(?s)^\s*<think>.+?</think>\s*<answer>.+?</answer>\s*$"


def strip_end_of_turn(text: str) -> str:
    """Remove trailing end-of-turn markers like ``<|im_end|>`` / ``</s>`` and whitespace."""
    return _END_OF_TURN_RE.sub("", text).strip()


def normalize_answer(answer: Any) -> str:
    """Canonical string form so that "$1,234." == "1234" and "85.0" == "85"."""
    text = re.sub(r"\s+", "", str(answer)).replace("$", "").rstrip(".")
    if _THOUSANDS_RE.fullmatch(text):
        text = text.replace(",", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    if not value.is_finite():
        return text
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, honouring nested braces like ``\\frac{1}{2}``."""
    for match in reversed(list(_BOXED_RE.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i]
    return None  # no boxed, or only unbalanced ones


def extract_answer(text: str) -> str | None:
    """Normalised final answer of a completion, or None when it has none.

    Precedence: the last ``<answer>...</answer>`` (read by the same rules) > last ``\\boxed{}`` > GSM8K
    ``#### X`` > "answer is X" / "Answer: X" > the whole text if it is a bare number > the last number in the
    text. ``<think>...</think>`` reasoning is never the answer; a response still thinking has none.
    """
    text = strip_end_of_turn(text)
    if tagged := _ANSWER_TAG_RE.findall(text):
        text = tagged[-1].strip()
    elif "<think>" in text:
        if "</think>" not in text:
            return None
        text = _THINK_RE.sub(" ", text).strip()
    candidate = _last_boxed(text)
    if candidate is None and (hashes := _HASHES_RE.findall(text)):
        candidate = hashes[-1]
    if candidate is None and (stated := _ANSWER_IS_RE.findall(text)):
        candidate = stated[-1]
    if candidate is None and _BARE_NUMBER_RE.fullmatch(text):
        candidate = text
    if candidate is None and (numbers := _NUMBER_RE.findall(text)):
        candidate = numbers[-1]
    if candidate is None:
        return None
    normalized = normalize_answer(candidate)
    return normalized or None


def _gold_answer(answer: Any) -> str | None:
    # Gold columns are usually bare ("72") but GSM8K ships full solutions ending in "#### 72".
    text = str(answer)
    if "####" in text or "\\boxed" in text:
        return extract_answer(text)
    return normalize_answer(text)


def _math_verify():
    """math-verify's (parse, verify) where it is installed (pip install 'rlsys[math]'), else None."""
    try:
        import logging

        from math_verify import parse, verify
    except ImportError:
        return None
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call that timeouts are off
    return parse, verify


def equivalent(predicted: str | None, gold: str | None) -> bool:
    """Equal after normalisation; otherwise, for answers that are not both plain numbers, mathematically equal
    by math-verify (1/2 and \\frac{1}{2}, x^2+1 and 1+x^2) where it is installed."""
    if predicted is None or gold is None:
        return False
    if predicted == gold:
        return True
    if _BARE_NUMBER_RE.fullmatch(predicted) and _BARE_NUMBER_RE.fullmatch(gold):
        return False
    checker = _math_verify()
    if checker is None:
        return False
    parse, verify = checker
    try:
        # no signal-based timeouts (rewards run off the main thread); the watchdog's reward_s bounds the call
        return bool(verify(parse(f"${gold}$", parsing_timeout=None), parse(f"${predicted}$", parsing_timeout=None),
                           timeout_seconds=None))
    except Exception:  # noqa: BLE001 - an answer math-verify cannot read is not a match
        return False


def answer_match(prompts: list[str], completions: list[str], answer: list[Any], **_: Any) -> list[float]:
    """1.0 where the completion's final answer equals the ``answer`` column, else 0.0.

    Handles bare numbers, ``\\boxed{}``, ``####``, ``<answer>`` tags and "the answer is X" completions, so it
    also serves as the boxed/GSM8K matcher (see ``boxed_answer_match``); math-verify decides non-numeric answers.
    """
    return [1.0 if equivalent(extract_answer(completion), _gold_answer(gold)) else 0.0
            for completion, gold in zip(completions, answer, strict=True)]


boxed_answer_match = answer_match


def make_format_reward(pattern: str = DEFAULT_FORMAT_PATTERN) -> RewardFn:
    """Rule giving 1.0 when ``re.search(pattern, completion)`` matches (anchor it yourself).

    End-of-turn markers are stripped first so template tokens don't fail the format.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise RewardConfigError(f"format reward pattern {pattern!r} is not a valid regex: {exc}") from exc

    def format_reward(prompts: list[str], completions: list[str], **_: Any) -> list[float]:
        return [1.0 if compiled.search(strip_end_of_turn(c)) else 0.0 for c in completions]

    return format_reward


format_reward = make_format_reward()
think_answer = make_format_reward(THINK_ANSWER_PATTERN)
think_answer.__name__ = "think_answer"

RULES: dict[str, RewardFn] = {"answer_match": answer_match, "format": format_reward, "think_answer": think_answer}
# Rules whose behaviour can be configured with extra spec keys (e.g. {"pattern": ...}).
RULE_FACTORIES: dict[str, Callable[..., RewardFn]] = {"format": make_format_reward}
