"""The curation filters on the embedded labelled corpus, without Ray: the figures the pipeline must reach."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from rlsys.config.schema import JobConfig
from rlsys.curation.corpus import chat_corpus, normalized, pretrain_corpus, reference_texts
from rlsys.curation.dedup import MinHasher, cluster_duplicates, exact_key, first_of_groups
from rlsys.curation.heuristics import HeuristicFilter
from rlsys.curation.quality import QualityModel, auc, cutoff


def curate_cfg(**overrides):
    cfg = OmegaConf.structured(JobConfig).curate
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def corpus():
    return pretrain_corpus(seed=0, num_docs=3000)


@pytest.fixture(scope="module")
def judged(corpus):
    """(cleaned text, drop reason) of every document under the default rules."""
    judge = HeuristicFilter(curate_cfg().heuristics).judge
    return [judge(row["text"]) for row in corpus]


def labels(rows, kind=None):
    return np.array([r["curation_kind"] if kind else r["curation_label"] for r in rows])


def test_corpus_is_deterministic_labelled_and_mixed(corpus):
    assert pretrain_corpus(seed=0, num_docs=300) == pretrain_corpus(seed=0, num_docs=300)
    assert pretrain_corpus(seed=1, num_docs=300) != pretrain_corpus(seed=0, num_docs=300)
    found = labels(corpus)
    assert {label: int((found == label).sum()) for label in ("clean", "junk", "exact_dup", "near_dup")} == \
        {"clean": 1740, "junk": 660, "exact_dup": 240, "near_dup": 360}
    seen = set()
    for row in (r for r in corpus if r["curation_label"] != "junk"):  # exact duplicates follow their original
        key = normalized(row["text"])
        assert (key in seen) == (row["curation_label"] == "exact_dup")
        seen.add(key)
    chat = chat_corpus(seed=0, num_rows=200)
    assert [m["role"] for m in chat[0]["messages"]] == ["user", "assistant"]


def test_the_mmmm_post_must_go():
    judge = HeuristicFilter(curate_cfg().heuristics).judge
    assert judge("M" * 300)[1] == "char_repetition:repeated_chars"
    assert judge("I love this band so much " + "M" * 120 + " see you there")[1].startswith("char_repetition")
    without = HeuristicFilter(curate_cfg(**{"heuristics.char_repetition.enabled": False}).heuristics).judge
    assert without("M" * 300)[1].startswith("gopher_quality")  # one word: the next rule still catches it


def test_blocklist_takes_words_and_phrases_from_the_config(corpus):
    clean = next(r["text"] for r in corpus if r["curation_label"] == "clean")
    cfg = curate_cfg(**{"heuristics.blocklist.words": ["payday loan", "zorblax"]}).heuristics
    judge = HeuristicFilter(cfg).judge
    assert judge(clean)[1] == ""
    assert judge(clean + "\n\nGet a Payday Loan now.")[1] == "blocklist:blocked_words"
    assert judge(clean.replace("the", "zorblax", 1))[1] == "blocklist:blocked_words"
    cfg.blocklist.max_hits = 1
    assert HeuristicFilter(cfg).judge(clean.replace("the", "zorblax", 1))[1] == ""


def test_unicode_normalisation_and_switching_rules_off(corpus):
    clean = next(r["text"] for r in corpus if r["curation_label"] == "clean")
    fullwidth = "ｆｕｌｌｗｉｄｔｈ ﬁne\u00a0text " + clean
    assert HeuristicFilter(curate_cfg().heuristics).judge(fullwidth)[0].startswith("fullwidth fine text ")
    kept = HeuristicFilter(curate_cfg(**{"heuristics.unicode_form": "none"}).heuristics).judge(fullwidth)[0]
    assert kept.startswith("ｆｕｌｌｗｉｄｔｈ")
    names = ("char_repetition", "blocklist", "gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")
    everything_off = curate_cfg(**{f"heuristics.{name}.enabled": False for name in names}).heuristics
    assert HeuristicFilter(everything_off).judge("$$$ ### !!!")[1] == ""


def test_rules_remove_planted_junk_and_keep_clean_text(corpus, judged):
    dropped = np.array([bool(reason) for _, reason in judged])
    label, kind = labels(corpus), labels(corpus, kind=True)
    assert dropped[label == "clean"].mean() < 0.01
    rule_junk = (label == "junk") & ~np.isin(kind, ["word_salad", "boilerplate"])
    assert dropped[rule_junk].mean() == 1.0  # everything but word salad, and most boilerplate
    assert dropped[kind == "boilerplate"].mean() > 0.6
    assert dropped[kind == "word_salad"].mean() == 0.0  # fluent-looking shuffles: the classifier's job


def test_exact_dedup_keeps_the_first_of_each_normalised_text():
    texts = ["Hello  world.", "hello world.\n", "Hello\u00a0world.", "Another text."]
    dropped, first = first_of_groups(np.arange(4), np.array([exact_key(t) for t in texts]))
    assert dropped.tolist() == [1, 2] and first.tolist() == [0, 0]


def test_near_dedup_precision_and_recall_on_the_corpus(corpus, judged):
    """>= 0.95 recall at >= 0.95 precision on the documents the rules and exact dedup leave."""
    keep = np.array([not reason for _, reason in judged])
    ids = np.flatnonzero(keep)
    texts = [judged[i][0] for i in ids]
    dropped, _ = first_of_groups(ids, np.array([exact_key(t) for t in texts]))
    survivors = np.setdiff1d(ids, dropped)
    hasher = MinHasher(curate_cfg().near_dedup)
    signatures = hasher.signatures([judged[i][0] for i in survivors])
    pairs = hasher.candidate_pairs(survivors, hasher.band_keys(signatures))
    near, _ = cluster_duplicates(hasher.verified(pairs, survivors, signatures))
    label = labels(corpus)
    target = survivors[label[survivors] == "near_dup"]
    hits = np.isin(near, target).sum()
    precision, recall = hits / len(near), hits / len(target)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_cluster_duplicates_keeps_the_smallest_id_of_each_component():
    dropped, kept = cluster_duplicates(np.array([[5, 9], [2, 5], [7, 8]]))
    assert dict(zip(dropped.tolist(), kept.tolist())) == {5: 2, 9: 2, 8: 7}


def test_quality_classifier_separates_reference_from_junk_and_completes_the_rules(corpus, judged):
    reference = reference_texts(seed=0)
    rng = np.random.default_rng(0)
    raw = [corpus[i]["text"] for i in rng.choice(len(corpus), 2000, replace=False)]
    model = QualityModel(2, 2).fit(reference[:640], raw)
    label = labels(corpus)
    scores = model.score([text for text, _ in judged])
    assert auc(model.score(reference[640:]), scores[label == "junk"]) >= 0.9
    dropped = np.array([bool(reason) for _, reason in judged]) | (scores < curate_cfg().quality.threshold)
    assert dropped[label == "junk"].mean() >= 0.95
    assert dropped[label == "clean"].mean() < 0.05
    assert cutoff(np.arange(100.0), 0.5, keep_fraction=0.1) == pytest.approx(89.1)
    assert cutoff(np.arange(100.0), 0.5, keep_fraction=None) == 0.5
