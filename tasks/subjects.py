"""A training run's subject record: a Bloom filter of the pseudonyms of the people its data
holds, kept as a run artifact beside the anonymized data, so an erasure request can tell
whether the run trained on a person (tasks/erasure.py)."""

from __future__ import annotations

import base64
import hashlib
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tasks import tracking

SUBJECTS = "subjects/bloom.json"  # the run artifact
# Per membership test: a false positive marks an unaffected version as affected (a needless
# retrain), never the reverse; at 1e-6 it costs about 29 bits per subject.
FALSE_POSITIVE_RATE = 1e-6


@dataclass(frozen=True)
class Bloom:
    """A Bloom filter (Bloom 1970) of pseudonyms, with Kirsch–Mitzenmacher double hashing.

    Chosen over a sorted list of pseudonyms: it answers "is this pseudonym in the run?" for a
    pseudonym one can compute (which needs the key) but cannot be listed, nor joined with
    another run's filter to link the same people across runs; its errors only over-report."""

    m: int  # bits
    k: int  # hash functions
    n: int  # distinct items added
    bits: bytes

    @classmethod
    def of(cls, items: Iterable[str], fpr: float = FALSE_POSITIVE_RATE) -> Bloom:
        unique = sorted(set(items))
        n = len(unique)
        m = max(64, math.ceil(-max(n, 1) * math.log(fpr) / math.log(2) ** 2))
        k = max(1, round(m / max(n, 1) * math.log(2)))
        bits = np.zeros(m, dtype=bool)
        if n:
            bits[_positions(unique, m, k).ravel()] = True
        return cls(m, k, n, np.packbits(bits).tobytes())

    def __contains__(self, item: str) -> bool:
        bits = np.unpackbits(np.frombuffer(self.bits, dtype=np.uint8))
        return bool(bits[_positions([item], self.m, self.k)].all())

    def to_dict(self) -> dict:
        return {"kind": "bloom", "m": self.m, "k": self.k, "n": self.n,
                "false_positive_rate": FALSE_POSITIVE_RATE,
                "bits": base64.b64encode(zlib.compress(self.bits)).decode()}

    @classmethod
    def from_dict(cls, d: dict) -> Bloom:
        return cls(d["m"], d["k"], d["n"], zlib.decompress(base64.b64decode(d["bits"])))


def _positions(items: list[str], m: int, k: int) -> np.ndarray:
    digests = np.frombuffer(b"".join(hashlib.sha256(s.encode()).digest()[:16] for s in items),
                            dtype="<u8").reshape(-1, 2)
    h1, h2 = digests[:, :1], digests[:, 1:] | np.uint64(1)
    with np.errstate(over="ignore"):  # modular arithmetic on purpose
        return ((h1 + np.arange(k, dtype=np.uint64) * h2) % np.uint64(m)).astype(np.int64)


def record(run_id: str, pseudonyms: Iterable[str], key_id: str, column: str) -> int:
    """Log a training run's subject filter beside its anonymized data; returns the subjects."""
    bloom = Bloom.of(p for p in pseudonyms if isinstance(p, str))
    tracking.log_dict(run_id, {**bloom.to_dict(), "key_id": key_id, "column": column}, SUBJECTS)
    tracking.set_tags(run_id, {"privgen.subjects": bloom.n})
    return bloom.n


