"""Exact and near-duplicate detection: MinHash estimates, LSH candidates, best copy kept."""

from __future__ import annotations

import random

import numpy as np

from hellolondon.corpus.dedup import Deduplicator, Fingerprinter, similarity


def words(seed: int, n: int = 3000) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(2000)]
    return rng.choices(vocab, k=n)


def edited(ws: list[str], every: int) -> list[str]:
    return [("changed" if i % every == 0 else w) for i, w in enumerate(ws)]


def test_signature_is_deterministic_and_estimates_jaccard():
    a, b = Fingerprinter(), Fingerprinter()
    text = " ".join(words(1))
    assert np.array_equal(a.fingerprint(text)[1], b.fingerprint(text)[1])
    near = " ".join(edited(words(1), 100))  # 1% of words changed: ~5% of 5-word shingles differ
    far = " ".join(words(2))
    sim_near = similarity(a.fingerprint(text)[1], a.fingerprint(near)[1])
    assert 0.8 < sim_near < 1.0
    assert similarity(a.fingerprint(text)[1], a.fingerprint(far)[1]) < 0.05


def test_exact_key_ignores_case_punctuation_and_spacing():
    fp = Fingerprinter()
    assert fp.fingerprint("The King,  the  QUEEN.")[0] == fp.fingerprint("the king the queen")[0]
    assert fp.fingerprint("the king the queen")[0] != fp.fingerprint("the queen the king")[0]


def test_deduplicator_flags_exact_and_near_keeps_distinct():
    fp = Fingerprinter()
    base = " ".join(words(1))
    docs = {
        "a": base,
        "b": base.upper(),  # exact duplicate once normalised
        "c": " ".join(edited(words(1), 100)),  # near duplicate
        "d": " ".join(words(3)),  # a different document
    }
    dedup = Deduplicator(threshold=0.8, bands=16)
    results = {k: dedup.check(k, *fp.fingerprint(v)) for k, v in docs.items()}
    assert results["a"] is None and results["d"] is None
    assert results["b"] == ("exact", "a", 1.0)
    kind, other, score = results["c"]
    assert kind == "near" and other == "a" and score >= 0.8


def test_threshold_decides_between_candidates():
    fp = Fingerprinter()
    base = words(5)
    strict = Deduplicator(threshold=0.99)
    strict.check("a", *fp.fingerprint(" ".join(base)))
    assert strict.check("b", *fp.fingerprint(" ".join(edited(base, 50)))) is None


def test_short_documents_still_fingerprint():
    fp = Fingerprinter(shingle=5)
    key, sig = fp.fingerprint("Amen")
    assert len(sig) == 128 and key
    assert fp.fingerprint("")[1].shape == (128,)
