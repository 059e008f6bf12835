"""Who a ledger entry's people are, across pseudonymization keys (issue 15): the population key
of a run's data subjects, the same people's pseudonyms under each retired key still held, and
whether they were in an earlier entry (its lineage, its subject filter, or, under a key no
longer held, the fail-safe assumption for the same dataset)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tasks import tracking
from tasks.ledger_compose import lineages

if TYPE_CHECKING:  # the anonymize stage's scrubbing dependencies are heavy
    from tasks.anonymize import Key


def population_key(anonymized: pd.DataFrame, column: str | None, key: Key,
                   source_digest: str) -> str:
    """The key of the population of data subjects behind ``anonymized`` (the anonymize
    stage's output): an HMAC under the pseudonymization key over the sorted set of
    pseudonyms in ``column``, so two runs on the same people share it whatever their rows,
    and it names nobody. ``column`` None (no person id in the data): the dataset is the
    population, keyed by its ``source_digest``.

    Under a rotated key the same people get a new key (their pseudonyms change): the check
    links the two while the old key is held (``under_retired_keys``)."""
    mac = hmac.new(key.secret, b"privgen-population\x1f", hashlib.sha256)
    if column is None:
        mac.update(b"source\x1f" + source_digest.encode())
    else:
        for pseudonym in sorted(set(anonymized[column].dropna().astype(str))):
            mac.update(pseudonym.encode() + b"\n")
    return "pop-" + mac.hexdigest()[:16]


@dataclass(frozen=True)
class Retired:
    """This run's people under a retired key still held: the population key they had there,
    and each one's pseudonym under it (by their pseudonym under the current key)."""
    population: str
    pseudonyms: dict[str, str] = field(default_factory=dict)


def under_retired_keys(ids: pd.Series | None, people: list[str], column: str | None,
                       held: dict[str, Key], source_digest: str) -> dict[str, Retired]:
    """Key id → ``Retired``, for each retired key in ``held`` (current first, as
    ``tasks.keys.held`` gives them). ``ids``: the validated data's raw ``column`` (the only
    place the link between keys exists; only HMACs of it leave this function), ``people``:
    the current key's pseudonyms the anonymized data holds. A key under which not every one
    of ``people`` could be translated is left out: its releases then count conservatively."""
    from tasks.anonymize import pseudonymize

    current, *retired = held.values()
    if column is None:  # the dataset is the population: its key is computed directly
        return {k.key_id: Retired(population_key(pd.DataFrame(), None, k, source_digest))
                for k in retired}
    new = pseudonymize(ids, current, column)
    mine = new.isin(people).to_numpy(dtype=bool)
    out = {}
    for k in retired:
        translate = dict(zip(new[mine], pseudonymize(ids[mine], k, column), strict=True))
        if len(translate) == len(people):
            frame = pd.DataFrame({column: list(translate.values())})
            out[k.key_id] = Retired(population_key(frame, column, k, source_digest), translate)
    return out


class Membership:
    """Whether this run's people were in an earlier ledger entry, by the entry's lineage (its
    population and those linked to it across key rotations: a person in one of its entries is
    taken to be in all). All of them for the run's own lineage; else, per entry of that lineage,
    its training run's subject filter (``tasks.subjects``) tested with their pseudonyms under the
    entry's key, when that key is held; an entry under a key no longer held (destroyed, or
    another machine's) cannot be tested: when it is of the same dataset, everyone is taken to
    be in its lineage (fail safe), else nobody."""

    def __init__(self, population: str, key_id: str, retired: dict[str, Retired],
                 dataset: str, source_digest: str, known: list[dict]):
        self.key_id, self.retired = key_id, retired
        self.dataset, self.source_digest = dataset, source_digest
        present = {e["population"] for e in known}
        probe = {"population": population,
                 "links": {"exact": sorted({r.population for r in retired.values()} & present)}}
        self.exact = probe["links"]["exact"]
        self._groups: dict[str, list[dict]] = {}
        for group in lineages([*known, probe]):
            members = [e for e in group if e is not probe]
            for e in group:
                self._groups[e["population"]] = members
        self.lineage = {e["population"] for e in self._groups[population]} | {population}
        self.assumed = sorted({e["population"] for e in known if self.how(e) == "assumed"})
        self._tested: dict[str, np.ndarray | None] = {}

    def how(self, entry: dict) -> str:
        if entry["population"] in self.lineage:
            return "lineage"
        if entry["key_id"] == self.key_id or entry["key_id"] in self.retired:
            return "filter" if entry["basis"].startswith("subject") else "other data"
        same = entry["dataset"] == self.dataset or entry["source_digest"] == self.source_digest
        return "assumed" if same else "other data"

    def everyone(self, entry: dict) -> bool:
        """Whether all of this run's people count as in ``entry``."""
        return any(self.how(e) in ("lineage", "assumed")
                   for e in self._groups[entry["population"]])

    def __call__(self, entry: dict, people: list[str]) -> np.ndarray:
        """``people`` (this run's, always the same list): whether each was in ``entry``."""
        if self.everyone(entry):
            return np.ones(len(people), dtype=bool)
        inside = np.zeros(len(people), dtype=bool)
        for e in self._groups[entry["population"]]:
            if self.how(e) == "filter":
                inside |= self._test(e, people)
        return inside

    def _test(self, entry: dict, people: list[str]) -> np.ndarray:
        from mlflow.exceptions import MlflowException

        from tasks.subjects import SUBJECTS, Bloom, _positions

        if entry["run_id"] not in self._tested:
            try:
                bloom = Bloom.from_dict(tracking.download_json(entry["run_id"], SUBJECTS))
            except (MlflowException, OSError, KeyError):  # no filter: not linkable
                self._tested[entry["run_id"]] = np.zeros(len(people), dtype=bool)
                return self._tested[entry["run_id"]]
            if entry["key_id"] != self.key_id:
                people = [self.retired[entry["key_id"]].pseudonyms[p] for p in people]
            bits = np.unpackbits(np.frombuffer(bloom.bits, dtype=np.uint8))
            self._tested[entry["run_id"]] = bits[_positions(people, bloom.m, bloom.k)].all(
                axis=1)
        return self._tested[entry["run_id"]]
