"""A dependency-free embedder usable as `embedder="engine.embedders:hashing"`.

Feature hashing of word unigrams and character trigrams into 256 dimensions (signed), so texts
that share words or word fragments point the same way. It needs no model download, which makes
it the embedder of tests and a reasonable default for fuzzy matching; plug a real sentence model
in production through the same `module:callable` setting.
"""

from __future__ import annotations

import zlib

from .text import tokenize

DIMENSION = 256


def _features(text: str) -> list[str]:
    words = tokenize(text)
    features = list(words)
    for word in words:
        padded = f"#{word}#"
        features.extend(padded[i:i + 3] for i in range(len(padded) - 2))
    return features


def hashing(texts: list[str]) -> list[list[float]]:
    """Map each text to a 256-dimensional signed feature-hash vector."""
    vectors = []
    for text in texts:
        vector = [0.0] * DIMENSION
        for feature in _features(text):
            digest = zlib.crc32(feature.encode("utf-8"))
            vector[digest % DIMENSION] += 1.0 if (digest >> 16) & 1 else -1.0
        vectors.append(vector)
    return vectors
