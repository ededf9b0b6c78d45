"""The schema of `rlsys curate`: heuristic filters, deduplication, the quality classifier and SFT selection.

Part of the one job schema (`schema.JobConfig.curate`); thresholds follow the papers and datatrove filters named.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from rlsys.config.choices import one_of


@dataclass
class GopherQualityConfig:
    """Gopher's document rules (datatrove GopherQualityFilter); thresholds from the Gopher paper."""
    enabled: bool = True
    min_words: int = 50
    max_words: int = 100000
    min_avg_word_length: float = 3.0
    max_avg_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # "#" and ellipses per word
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8  # words holding at least one letter
    min_stop_words: int = 2


@dataclass
class GopherRepetitionConfig:
    """Duplicated lines and paragraphs, top and duplicated word n-grams (datatrove GopherRepetitionFilter)."""
    enabled: bool = True
    max_dup_line_fraction: float = 0.3
    max_dup_paragraph_fraction: float = 0.3
    max_dup_line_char_fraction: float = 0.2
    max_dup_paragraph_char_fraction: float = 0.2


@dataclass
class C4QualityConfig:
    """C4's rules (datatrove C4QualityFilter): drops lorem ipsum and code pages, removes javascript/policy lines."""
    enabled: bool = True
    min_sentences: int = 5
    min_words_per_line: int = 3
    drop_lines_without_terminal_punct: bool = False  # C4 did; FineWeb found it removes too much


@dataclass
class FineWebQualityConfig:
    """FineWeb's line rules (datatrove FineWebQualityFilter)."""
    enabled: bool = True
    min_line_punct_ratio: float = 0.12  # lines ending in terminal punctuation
    max_short_line_ratio: float = 0.67  # lines of 30 characters or fewer
    max_char_dup_ratio: float = 0.01  # characters in duplicated lines
    max_newline_word_ratio: float = 0.3


@dataclass
class CharRepetitionConfig:
    """Character n-gram repetition (BigScience ROOTS): the "MMMMMMMM..." post."""
    enabled: bool = True
    ngram: int = 10
    max_ratio: float = 0.2


@dataclass
class BlocklistConfig:
    enabled: bool = True
    words: List[str] = field(default_factory=lambda: ["viagra", "cialis", "casino", "porn", "xxx", "payday loan"])
    max_hits: int = 0  # drop documents with more blocked words or phrases than this


@dataclass
class HeuristicsConfig:
    enabled: bool = True
    unicode_form: str = one_of("NFC", "NFKC", "none", default="NFKC")
    char_repetition: CharRepetitionConfig = field(default_factory=CharRepetitionConfig)
    blocklist: BlocklistConfig = field(default_factory=BlocklistConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    c4_quality: C4QualityConfig = field(default_factory=C4QualityConfig)
    fineweb_quality: FineWebQualityConfig = field(default_factory=FineWebQualityConfig)


@dataclass
class ExactDedupConfig:
    """Keep the first of the documents whose normalised text (NFKC, case-folded, spaces collapsed) is equal."""
    enabled: bool = True


@dataclass
class NearDedupConfig:
    """MinHash over word n-gram shingles, LSH buckets, candidates kept when their estimated Jaccard >= threshold."""
    enabled: bool = True
    threshold: float = 0.7
    ngram: int = 5
    num_perm: int = 128
    seed: int = 1


@dataclass
class QualityConfig:
    """A classifier of reference ("high quality") text against random input text, on hashed word n-grams."""
    enabled: bool = True
    reference: Optional[str] = None  # file or folder of high-quality text; None: the embedded reference set
    threshold: float = 0.22  # keep documents whose probability of "reference" is at least this
    keep_fraction: Optional[float] = None  # instead of threshold: keep this top fraction by score
    max_train_docs: int = 2000  # per class
    heldout_fraction: float = 0.2  # of the reference, for the AUC in the report
    ngram_min: int = 2  # word n-gram features: word order separates fluent text from shuffled words
    ngram_max: int = 2


@dataclass
class SelectConfig:
    """SFT selection: the top_k conversations by response length or by quality score."""
    enabled: bool = True
    top_k: int = 1000
    rank_by: str = one_of("quality", "length")


@dataclass
class EmbeddedCorpusConfig:
    """The labelled corpus `rlsys curate` runs on when data.train is not set."""
    seed: int = 0
    num_docs: int = 3000


@dataclass
class CurateConfig:
    mode: str = one_of("pretrain", "sft")  # pretrain: rows of text; sft: chat rows (judge the response, dedup the prompt)
    heuristics: HeuristicsConfig = field(default_factory=HeuristicsConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    select: SelectConfig = field(default_factory=SelectConfig)  # sft mode only
    corpus: EmbeddedCorpusConfig = field(default_factory=EmbeddedCorpusConfig)
    output_format: str = one_of("jsonl", "parquet")  # shards in output_dir/data
    samples_per_reason: int = 3
