"""Model-based quality filter: logistic regression on hashed word n-grams, reference text against raw input.

As in GPT-3's filter, positives are a "high quality" reference set and negatives a random sample of the raw
input; the score is the probability of "reference". Word bigrams are the default features: shuffled or
spliced text keeps the vocabulary of good text but not its word order. Hashing keeps the model stateless
apart from its weights, so it pickles small and scores in parallel.
"""
from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from rlsys.errors import DataError


class QualityModel:
    def __init__(self, ngram_min: int = 2, ngram_max: int = 2, seed: int = 0):
        self.vectorizer = HashingVectorizer(ngram_range=(ngram_min, ngram_max), n_features=2**18, alternate_sign=False)
        self.classifier = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=seed)

    def fit(self, reference: list[str], raw: list[str]) -> "QualityModel":
        if len(reference) < 2 or len(raw) < 2:
            raise DataError(f"the quality classifier needs at least 2 reference and 2 raw documents, got "
                            f"{len(reference)} and {len(raw)}. Give a larger curate.quality.reference, or set "
                            "curate.quality.enabled=false.")
        features = self.vectorizer.transform(reference + raw)
        self.classifier.fit(features, np.r_[np.ones(len(reference)), np.zeros(len(raw))])
        return self

    def score(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return self.classifier.predict_proba(self.vectorizer.transform(texts))[:, 1]


def auc(positive_scores, negative_scores) -> float | None:
    """Area under the ROC curve of positives against negatives (None when either side is empty)."""
    if not len(positive_scores) or not len(negative_scores):
        return None
    labels = np.r_[np.ones(len(positive_scores)), np.zeros(len(negative_scores))]
    return float(roc_auc_score(labels, np.r_[positive_scores, negative_scores]))


def cutoff(scores: np.ndarray, threshold: float, keep_fraction: float | None) -> float:
    """The score a document needs: the threshold, or the score of the top `keep_fraction`."""
    if keep_fraction is None or not len(scores):
        return threshold
    return float(np.quantile(scores, 1.0 - keep_fraction))
