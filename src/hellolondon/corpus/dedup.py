"""Exact and near-duplicate detection across documents: word shingles, MinHash, LSH banding.

Workers compute a document's exact key and MinHash signature (`Fingerprinter`); the parent
then keeps the best copy of each group (`Deduplicator`). Only numpy and hashlib are used, and
every hash is seeded, so results do not depend on process or PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np

_WORDS = re.compile(r"\w+")
_MERSENNE = np.uint64((1 << 61) - 1)  # odd multiplier that mixes word hashes into a shingle hash
_CHUNK = 8192  # shingles per block: keeps the (num_perm, chunk) matrix near 8 MB


def exact_key(words: list[str]) -> str:
    """Equal for texts that differ only in case, punctuation and spacing."""
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).hexdigest()


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


class Fingerprinter:
    """MinHash signatures of word shingles: for each of `num_perm` random hash functions
    h(x) = a*x + b (mod 2^64, a odd), the least value over the document's shingles. The share
    of equal positions in two signatures estimates the Jaccard similarity of their shingle sets."""

    def __init__(self, num_perm: int = 128, shingle: int = 5, seed: int = 1850) -> None:
        rng = np.random.default_rng(seed)
        self.shingle = shingle
        self.a = (rng.integers(0, 2**63, num_perm, dtype=np.uint64) << np.uint64(1)) | np.uint64(1)
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)

    def fingerprint(self, text: str) -> tuple[str, np.ndarray]:
        """The exact key and the MinHash signature of a document."""
        return self.fingerprint_words(_WORDS.findall(text.lower()))

    def fingerprint_words(
        self, words: list[str], vocab: Iterable[str] | None = None
    ) -> tuple[str, np.ndarray]:
        """The same from the document's lower-cased words (and their distinct set, if known)."""
        return exact_key(words), self.signature(self.shingles(words, vocab))

    def shingles(self, words: list[str], vocab: Iterable[str] | None = None) -> np.ndarray:
        """64-bit hashes of the runs of `shingle` consecutive words (repeats do not matter to
        a minimum, so they are not removed)."""
        table = {w: _word_hash(w) for w in (set(words) if vocab is None else vocab)}
        ids = np.fromiter((table[w] for w in words), dtype=np.uint64, count=len(words))
        k = min(self.shingle, len(ids)) or 1
        n = len(ids) - k + 1
        if n <= 0:
            return np.zeros(1, dtype=np.uint64)
        h = ids[:n].copy()
        for j in range(1, k):
            h = h * _MERSENNE + ids[j : j + n]  # wraps mod 2^64 by design
        return h

    def signature(self, shingles: np.ndarray) -> np.ndarray:
        sig = np.full(len(self.a), np.iinfo(np.uint64).max, dtype=np.uint64)
        a, b = self.a[:, None], self.b[:, None]
        buf = np.empty((len(self.a), min(_CHUNK, len(shingles))), dtype=np.uint64)
        for start in range(0, len(shingles), _CHUNK):
            block = shingles[None, start : start + _CHUNK]
            out = buf[:, : block.shape[1]]  # one buffer reused: fresh 8 MB arrays cost page faults
            np.multiply(block, a, out=out)
            np.add(out, b, out=out)
            np.minimum(sig, out.min(axis=1), out=sig)
        return sig


def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two documents' shingle sets."""
    return float(np.mean(sig_a == sig_b))


class Deduplicator:
    """Feed documents best first (`check`); each is compared with the ones kept before it.

    An exact duplicate has the same `exact_key`. A near duplicate shares at least one LSH band
    (num_perm / bands rows of the signature) with a kept document and its estimated Jaccard
    similarity to it is at least `threshold`. With 128 permutations in 16 bands of 8, pairs
    above about 0.7 almost always meet in a band; the threshold then confirms them.
    """

    def __init__(self, threshold: float = 0.8, bands: int = 16) -> None:
        self.threshold = threshold
        self.bands = bands
        self._exact: dict[str, str] = {}
        self._buckets: dict[tuple[int, bytes], list[str]] = {}
        self._sigs: dict[str, np.ndarray] = {}

    def check(self, doc_id: str, key: str, sig: np.ndarray | None) -> tuple[str, str, float] | None:
        """(kind, kept_id, similarity) when `doc_id` duplicates a kept document; else keep it."""
        if key in self._exact:
            return ("exact", self._exact[key], 1.0)
        bands = self._bands(sig) if sig is not None else []
        best: tuple[float, str] | None = None
        for band in bands:
            for other in self._buckets.get(band, ()):
                score = similarity(sig, self._sigs[other])
                if score >= self.threshold and (best is None or score > best[0]):
                    best = (score, other)
        if best:
            return ("near", best[1], round(best[0], 3))
        self._exact[key] = doc_id
        if sig is not None:
            self._sigs[doc_id] = sig
            for band in bands:
                self._buckets.setdefault(band, []).append(doc_id)
        return None

    def _bands(self, sig: np.ndarray) -> list[tuple[int, bytes]]:
        rows = len(sig) // self.bands
        return [(i, sig[i * rows : (i + 1) * rows].tobytes()) for i in range(self.bands)]
