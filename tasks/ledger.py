"""The privacy-budget ledger: every DP release on a population of data subjects, kept in the
MLflow store, and the composed ε of all of them by one accountant (issue 15)."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from tasks.contract import DataContract, Role
from tasks.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from tasks.anonymize import Key

# The training run's tag naming its population (``population_key``); the ledger's entries
# carry the same value.
POPULATION_TAG = "privgen.population"


def subject_column(contract: DataContract, named: str | None = None) -> str | None:
    """The column whose (pseudonymized) value identifies a data subject: ``named``
    (``train.privacy.subject_column``), else the contract's one ID column whose values may
    repeat (a person's id recurs over their records; a unique ID names a record), else its only
    ID column; None when the contract has no ID column. ConfigError when ``named`` is not an
    ID column or the choice is ambiguous."""
    ids = contract.with_role(Role.ID)
    if named is not None:
        if named not in {c.name for c in ids}:
            raise ConfigError(f"train.privacy.subject_column={named}: not a column of role id "
                              "in the data contract; name the column that identifies a person")
        return named
    repeating = [c.name for c in ids if not c.unique] or [c.name for c in ids]
    if len(repeating) > 1:
        raise ConfigError(f"the data contract has several ID columns that may identify a person "
                          f"({', '.join(repeating)}); name one in train.privacy.subject_column")
    return repeating[0] if repeating else None


def population_key(anonymized: pd.DataFrame, column: str | None, key: Key,
                   source_digest: str) -> str:
    """The key of the population of data subjects behind ``anonymized`` (the anonymize
    stage's output): an HMAC under the pseudonymization key over the sorted set of
    pseudonyms in ``column``, so two runs on the same people share it whatever their rows,
    and it names nobody. ``column`` None (no person id in the data): the dataset is the
    population, keyed by its ``source_digest``.

    Under a rotated key the same people get a new key (their pseudonyms change)."""
    mac = hmac.new(key.secret, b"privgen-population\x1f", hashlib.sha256)
    if column is None:
        mac.update(b"source\x1f" + source_digest.encode())
    else:
        for pseudonym in sorted(set(anonymized[column].dropna().astype(str))):
            mac.update(pseudonym.encode() + b"\n")
    return "pop-" + mac.hexdigest()[:16]


def population_of(run_id: str) -> str | None:
    """The population key a training run recorded (its ``POPULATION_TAG``), if any."""
    from tasks import tracking

    return tracking.client().get_run(run_id).data.tags.get(POPULATION_TAG)
