"""Exact and near deduplication, as pure functions over ids, keys and signatures.

Per-document work (hashing, shingling, MinHash) runs in parallel; the global step (grouping keys into
buckets, verifying candidates, connected components) runs on compact arrays of ids and hashes.
Within each group of duplicates the smallest id, i.e. the first occurrence in the input, is kept.
"""
from __future__ import annotations

import hashlib

import numpy as np
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from rlsys.curation.corpus import normalized


def exact_key(text: str) -> int:
    """64-bit hash of the normalised text (NFKC, case-folded, whitespace collapsed)."""
    return int.from_bytes(hashlib.blake2b(normalized(text).encode(), digest_size=8).digest(), "little", signed=True)


def first_of_groups(ids: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dropped ids, the id each duplicates): every member of a key group but the smallest id."""
    order = np.lexsort((ids, keys))
    ids, keys = ids[order], keys[order]
    starts = np.r_[True, keys[1:] != keys[:-1]]
    first = ids[np.maximum.accumulate(np.where(starts, np.arange(len(ids)), 0))]
    return ids[~starts], first[~starts]


class MinHasher:
    """Signatures over word n-gram shingles and their LSH band keys.

    LSH only proposes candidates, and each candidate pair is then checked against `threshold` on the
    signatures, so the bands are chosen for recall (datasketch's optimum with false negatives weighted 0.9).
    """
    BAND_WEIGHTS = (0.1, 0.9)

    def __init__(self, cfg):
        self.threshold, self.ngram, self.num_perm, self.seed = cfg.threshold, cfg.ngram, cfg.num_perm, cfg.seed
        lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=self.BAND_WEIGHTS)
        self.bands, self.rows = lsh.b, lsh.r
        self.mixers = np.random.default_rng(cfg.seed).integers(1, 2**63, size=self.rows, dtype=np.uint64) | 1

    def shingles(self, text: str) -> list[bytes]:
        words = normalized(text).split()
        if len(words) <= self.ngram:
            return [" ".join(words).encode()]
        return list({" ".join(words[i:i + self.ngram]).encode() for i in range(len(words) - self.ngram + 1)})

    def signatures(self, texts: list[str]) -> np.ndarray:
        """uint32 array [documents, num_perm]."""
        if not texts:
            return np.zeros((0, self.num_perm), dtype=np.uint32)
        hashes = MinHash.bulk([self.shingles(t) for t in texts], num_perm=self.num_perm, seed=self.seed)
        return np.stack([m.hashvalues for m in hashes]).astype(np.uint32)

    def band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """int64 array [documents, bands]: one hash of each band's rows (uint64 arithmetic wraps on purpose)."""
        used = signatures[:, :self.bands * self.rows].astype(np.uint64).reshape(len(signatures), self.bands, self.rows)
        with np.errstate(over="ignore"):
            return (used * self.mixers).sum(axis=2).view(np.int64)

    def candidate_pairs(self, ids: np.ndarray, bands: np.ndarray) -> np.ndarray:
        """[pairs, 2] of (first id in a bucket, another id in it), over all bands, without repeats."""
        pairs = [np.stack(first_of_groups(ids, bands[:, band])[::-1], axis=1) for band in range(self.bands)]
        return np.unique(np.concatenate(pairs), axis=0) if pairs else np.zeros((0, 2), dtype=np.int64)

    def verified(self, pairs: np.ndarray, ids: np.ndarray, signatures: np.ndarray) -> np.ndarray:
        """The pairs whose estimated Jaccard similarity (share of equal MinHash values) reaches the threshold."""
        position = {int(i): p for p, i in enumerate(ids)}
        a = signatures[[position[int(i)] for i in pairs[:, 0]]]
        b = signatures[[position[int(i)] for i in pairs[:, 1]]]
        return pairs[(a == b).mean(axis=1) >= self.threshold] if len(pairs) else pairs


def cluster_duplicates(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dropped ids, the kept id of their cluster): connected components of the pairs, each keeping its smallest id."""
    if not len(pairs):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    nodes, index = np.unique(pairs, return_inverse=True)
    index = index.reshape(pairs.shape)
    graph = coo_matrix((np.ones(len(pairs)), (index[:, 0], index[:, 1])), shape=(len(nodes), len(nodes)))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, component, nodes)
    kept = smallest[component]
    return nodes[nodes != kept], kept[nodes != kept]
