"""Documents per second of each curation stage: in the `rlsys curate` pipeline, and as bare single-core kernels.

    python benchmarks/curation_throughput.py [overrides...]     e.g. curate.corpus.num_docs=20000

Runs `rlsys curate` on the embedded corpus (10,000 documents unless overridden) on a local Ray with every
core, printing each stage's documents in / seconds (Ray Data tasks, driver steps and materialisation
included). Then times the same per-document work in this process on one core, without Ray: the rules,
the normalised-text hash, MinHash signatures with their band keys, and quality scoring.
"""
from __future__ import annotations

import sys
import tempfile
import time

import numpy as np


def kernel_rates(cfg, texts: list[str], reference: list[str]) -> dict[str, float]:
    from rlsys.curation.dedup import MinHasher, exact_key
    from rlsys.curation.heuristics import HeuristicFilter
    from rlsys.curation.quality import QualityModel

    judge = HeuristicFilter(cfg.curate.heuristics).judge
    hasher = MinHasher(cfg.curate.near_dedup)
    model = QualityModel(cfg.curate.quality.ngram_min, cfg.curate.quality.ngram_max).fit(reference, texts[:2000])
    kernels = {"heuristics": lambda: [judge(t) for t in texts], "exact_dedup": lambda: [exact_key(t) for t in texts],
               "near_dedup": lambda: hasher.band_keys(hasher.signatures(texts)), "quality": lambda: model.score(texts)}
    rates = {}
    for name, work in kernels.items():
        began = time.perf_counter()
        work()
        rates[name] = len(texts) / (time.perf_counter() - began)
    return rates


def main(overrides: list[str]) -> None:
    from rlsys.config.compose import compose_job
    from rlsys.config.validate import to_typed
    from rlsys.curation.corpus import pretrain_corpus, reference_texts
    from rlsys.curation.curate import run

    with tempfile.TemporaryDirectory() as out:
        cfg = to_typed(compose_job("curate", [f"output_dir={out}", "curate.corpus.num_docs=10000", *overrides]))
        began = time.perf_counter()
        funnel = run(cfg)["funnel"]
        wall = time.perf_counter() - began
    texts = [row["text"] for row in pretrain_corpus(cfg.curate.corpus.seed, 3000)]
    rates = kernel_rates(cfg, texts, reference_texts(cfg.curate.corpus.seed)[:640])
    print(f"\ncuration throughput, {funnel[0]['docs']:,} documents, whole run {wall:.1f}s")
    print(f"{'stage':<12} {'docs in':>8} {'seconds':>8} {'pipeline docs/s':>16} {'1-core kernel docs/s':>21}")
    for before, row in zip(funnel, funnel[1:]):
        print(f"{row['stage']:<12} {before['docs']:>8,} {row['seconds']:>8.2f} {row['docs_per_s']:>16,.0f} "
              f"{rates[row['stage']]:>21,.0f}")
    print(f"(kernels on 3,000 documents, mean {np.mean([len(t.split()) for t in texts]):.0f} words)")


if __name__ == "__main__":
    main(sys.argv[1:])
