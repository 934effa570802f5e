"""The offline corpus of the attention study: the English text of Python's own documentation topics.

The text is ``pydoc_data.topics.topics`` — the help texts that ``help("if")`` and friends print, which
ship with CPython — joined in sorted key order with a blank line between topics (≈ 465 000 characters
under Python 3.11). Nothing is downloaded. Another Python version may ship a different text: its
SHA-256 goes into every run's metrics, so two runs compare only when the hashes agree.

The characters are the vocabulary (sorted); the first ``1 − held_out`` of the text trains, the rest
(the last topics, alphabetically) is held out. The baselines are n-gram models fitted on the training
part with add-α smoothing: unigram and bigram bits per character on the held-out part.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np


def corpus_text() -> str:
    """The documentation topics of this Python, joined in sorted key order with blank lines between them."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


@dataclasses.dataclass(frozen=True)
class Corpus:
    text_sha256: str  # SHA-256 of the UTF-8 text: equal hashes, equal corpora
    chars: str  # the vocabulary, sorted
    train: np.ndarray  # int32 ids of the training part
    held_out: np.ndarray  # int32 ids of the held-out part

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def encode(self, s: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.chars)}
        missing = sorted(set(s) - set(index))
        if missing:
            raise ValueError(f"the text has characters outside the corpus vocabulary: {missing!r}")
        return np.asarray([index[c] for c in s], np.int32)


def load_corpus(held_out: float = 0.1) -> Corpus:
    """The corpus split at ``1 − held_out`` of its length (a contiguous tail is held out)."""
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out!r}")
    text = corpus_text()
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.fromiter((index[c] for c in text), np.int32, len(text))
    cut = int(round(len(ids) * (1.0 - held_out)))
    return Corpus(hashlib.sha256(text.encode("utf-8")).hexdigest(), chars, ids[:cut], ids[cut:])


def unigram_bpc(train: np.ndarray, test: np.ndarray, vocab: int, alpha: float = 1.0) -> float:
    """Held-out bits per character of p(c) = (n_c + α) / (N + αV), fitted on ``train``."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + alpha
    p = counts / counts.sum()
    return float(-np.mean(np.log2(p[test])))


def bigram_bpc(train: np.ndarray, test: np.ndarray, vocab: int, alpha: float = 1.0) -> float:
    """Held-out bits per character of p(c | c′) = (n_{c′c} + α) / (n_{c′} + αV); the first character by the unigram."""
    pairs = np.zeros((vocab, vocab), np.float64)
    np.add.at(pairs, (train[:-1], train[1:]), 1.0)
    p = (pairs + alpha) / (pairs + alpha).sum(axis=1, keepdims=True)
    uni = np.bincount(train, minlength=vocab).astype(np.float64) + alpha
    first = -np.log2(uni[test[0]] / uni.sum())
    return float((first - np.log2(p[test[:-1], test[1:]]).sum()) / len(test))
