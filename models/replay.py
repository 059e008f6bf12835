"""Hashed word n-grams of the training text, stored with the model, so generation can reject a
record that copies a training record without any training text being kept in clear."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

FILE = "replay_ngrams.npz"
_WORD = re.compile(r"[^\W_]+")


def _ngrams(text: str, n: int) -> Iterator[str]:
    words = _WORD.findall(text.casefold())
    for i in range(len(words) - n + 1):
        yield " ".join(words[i : i + n])


class ReplayIndex:
    """A set of 64-bit keyed BLAKE2b digests of every ``n``-word sequence of the training text.

    The per-model salt stops one precomputed table from serving every model; 64 bits keep
    accidental collisions to about one in 10^13 lookups for the demo's 60k n-grams."""

    def __init__(self, digests: np.ndarray, n: int, salt: bytes):
        self.digests = np.unique(digests.astype(np.uint64))
        self.n = n
        self.salt = salt

    @classmethod
    def build(cls, texts: Iterable[str], n: int = 8) -> ReplayIndex:
        salt = secrets.token_bytes(16)
        digests = [cls._digest(g, salt) for t in texts if isinstance(t, str)
                   for g in _ngrams(t, n)]
        return cls(np.array(digests, dtype=np.uint64), n, salt)

    @staticmethod
    def _digest(gram: str, salt: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8, key=salt).digest(),
                              "little")

    def copies(self, text: str) -> bool:
        """Whether ``text`` contains any ``n``-word sequence of the training text."""
        if not isinstance(text, str) or not len(self.digests):
            return False
        probe = np.array([self._digest(g, self.salt) for g in _ngrams(text, self.n)],
                         dtype=np.uint64)
        return bool(probe.size and np.isin(probe, self.digests, assume_unique=False).any())

    def __len__(self) -> int:
        return len(self.digests)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / FILE
        np.savez(path, digests=self.digests,
                 meta=np.frombuffer(json.dumps({"n": self.n, "salt": self.salt.hex()}).encode(),
                                    dtype=np.uint8))
        return path

    @classmethod
    def load(cls, directory: Path) -> ReplayIndex | None:
        path = Path(directory) / FILE
        if not path.exists():
            return None
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes())
            return cls(z["digests"], meta["n"], bytes.fromhex(meta["salt"]))
