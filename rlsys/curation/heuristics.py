"""Rule-based quality filters: datatrove's Gopher, C4 and FineWeb rules, character repetition, a word blocklist.

`HeuristicFilter(cfg.curate.heuristics).judge(text)` normalises the text, runs the enabled filters in order
and returns the (possibly cleaned) text with the first reason to drop it, e.g. "gopher_quality:short_doc".
"""
from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)
from datatrove.utils.word_tokenizers import WhitespaceTokenizer

WORD_PATTERN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")


class RegexWordTokenizer(WhitespaceTokenizer):
    """Words and runs of punctuation. datatrove's English default, spaCy, tokenised ~35k words/s here and
    became the rules' bottleneck; the counts the rules take (words, symbols, n-grams) come out nearly the
    same. Sentence splitting stays datatrove's regex."""

    def word_tokenize(self, text: str) -> list[str]:
        return WORD_PATTERN.findall(text)


def char_repetition_ratio(text: str, n: int) -> float:
    """Share of character n-grams taken by the most repeated ones (BigScience ROOTS: the top sqrt(#distinct))."""
    grams = Counter(text[i:i + n] for i in range(len(text) - n + 1))
    if not grams:
        return 0.0
    repeated = sorted((count for count in grams.values() if count > 1), reverse=True)
    return sum(repeated[:int(math.sqrt(len(grams)))]) / sum(grams.values())


class CharRepetitionFilter:
    def __init__(self, cfg):
        self.ngram, self.max_ratio = cfg.ngram, cfg.max_ratio

    def filter(self, doc: Document):
        ratio = char_repetition_ratio(doc.text, self.ngram)
        return (False, "repeated_chars") if ratio > self.max_ratio else True


class BlocklistFilter:
    def __init__(self, cfg):
        words = sorted(map(str.lower, cfg.words), key=len, reverse=True)
        self.pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b", re.I) if words else None
        self.max_hits = cfg.max_hits

    def filter(self, doc: Document):
        hits = len(self.pattern.findall(doc.text)) if self.pattern else 0
        return (False, "blocked_words") if hits > self.max_hits else True


FILTER_ORDER = ("char_repetition", "blocklist", "gopher_quality", "gopher_repetition", "c4_quality",
                "fineweb_quality")


def build_filters(cfg) -> list[tuple[str, object]]:
    """(name, filter) for each enabled rule set, in the order they run."""
    tokenizer = RegexWordTokenizer()
    g, r, c4, fw = cfg.gopher_quality, cfg.gopher_repetition, cfg.c4_quality, cfg.fineweb_quality
    makers = {
        "char_repetition": lambda: CharRepetitionFilter(cfg.char_repetition),
        "blocklist": lambda: BlocklistFilter(cfg.blocklist),
        "gopher_repetition": lambda: GopherRepetitionFilter(
            dup_line_frac=r.max_dup_line_fraction, dup_para_frac=r.max_dup_paragraph_fraction,
            dup_line_char_frac=r.max_dup_line_char_fraction, dup_para_char_frac=r.max_dup_paragraph_char_fraction,
            language=tokenizer),
        "gopher_quality": lambda: GopherQualityFilter(
            min_doc_words=g.min_words, max_doc_words=g.max_words, min_avg_word_length=g.min_avg_word_length,
            max_avg_word_length=g.max_avg_word_length, max_symbol_word_ratio=g.max_symbol_word_ratio,
            max_bullet_lines_ratio=g.max_bullet_lines_ratio, max_ellipsis_lines_ratio=g.max_ellipsis_lines_ratio,
            max_non_alpha_words_ratio=g.min_alpha_words_ratio, min_stop_words=g.min_stop_words,
            language=tokenizer),
        "c4_quality": lambda: C4QualityFilter(
            filter_no_terminal_punct=c4.drop_lines_without_terminal_punct, min_num_sentences=c4.min_sentences,
            min_words_per_line=c4.min_words_per_line, language=tokenizer),
        "fineweb_quality": lambda: FineWebQualityFilter(
            line_punct_thr=fw.min_line_punct_ratio, short_line_thr=fw.max_short_line_ratio,
            char_duplicates_ratio=fw.max_char_dup_ratio, new_line_ratio=fw.max_newline_word_ratio,
            language=tokenizer),
    }
    return [(name, makers[name]()) for name in FILTER_ORDER if cfg[name].enabled]


class HeuristicFilter:
    def __init__(self, cfg):
        self.unicode_form = cfg.unicode_form
        self.filters = build_filters(cfg)

    def normalize(self, text: str) -> str:
        text = text.replace("\r\n", "\n")
        return text if self.unicode_form == "none" else unicodedata.normalize(self.unicode_form, text)

    def judge(self, text: str) -> tuple[str, str]:
        """(text after normalisation and C4's line cleaning, "" to keep or "filter:reason" to drop)."""
        doc = Document(text=self.normalize(text), id="")
        if not doc.text.strip():
            return doc.text, "empty:empty"
        for name, rule in self.filters:
            verdict = rule.filter(doc)  # C4 removes lines from doc.text in place
            if verdict is not True:
                reason = verdict[1] if isinstance(verdict, tuple) else "dropped"
                return doc.text, f"{name}:{reason.removeprefix('gopher_')}"
        return doc.text, ""
