"""The ledger's check before a run, against the session's MLflow store (issue 15): a run's planned ε
is reserved before it spends (a crashed run's reservation counts), a run racing another reads the
ledger again after reserving, and a population stays linked across key rotations (exactly while
the old key is held, conservatively once it is destroyed)."""

import logging
import math
import uuid

import pandas as pd
import pytest

from flows.cli_privacy import notes
from models import accounting
from tasks import keys, ledger, ledger_store, subjects, tracking
from tasks.anonymize import KEY_ENV, AnonymizeConfig, pseudonymize
from tasks.contract import ColumnSpec, DataContract, Role
from tasks.errors import PrivacyError
from tasks.train_config import PrivacyConfig, TrainConfig

CONTRACT = DataContract(columns=(ColumnSpec(name="customer_id", role=Role.ID),
                                 ColumnSpec(name="rating")))
EVENTS = [accounting.gaussian(2.0, 1.0, 3)]


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setattr(ledger, "get_run_logger", lambda: logging.getLogger("test"))
    return tmp_path / "keys" / "pseudonym.key"


def _ids(n: int = 20) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"C-{tag}-{i}" for i in range(n)]


def _staged(root, ids: list[str], key_file) -> dict:
    """What a training run has when the ledger checks it: its validated data (raw ids), its
    anonymized data (pseudonyms under the current key) and its subject filter."""
    key = next(iter(keys.held(key_file).values()))
    folder = root / uuid.uuid4().hex[:8]
    folder.mkdir()
    validated = pd.DataFrame({"customer_id": ids, "rating": range(len(ids))})
    anonymized = validated.assign(customer_id=pseudonymize(validated["customer_id"], key,
                                                           "customer_id"))
    validated.to_parquet(folder / "validated.parquet")
    anonymized.to_parquet(folder / "anonymized.parquet")
    run_id = tracking.start_run("ledger-check-tests", folder.name, {"privgen.flow": "training"})
    subjects.record(run_id, anonymized["customer_id"], key.key_id, "customer_id")
    return {"run_id": run_id, "validated": str(folder / "validated.parquet"),
            "anonymized": str(folder / "anonymized.parquet")}


def _check(run: dict, key_file, source: str, lifetime: float | None = None) -> dict:
    cfg = TrainConfig().model_copy(update={"privacy": PrivacyConfig(
        target_epsilon=1.0, lifetime_budget=lifetime)})
    return ledger.check_task.fn(run["anonymized"], run["validated"], source, source + "-sha",
                                CONTRACT, AnonymizeConfig(key_file=key_file,
                                                          subject_column="customer_id"),
                                cfg, 0, "cfg-" + source, run["run_id"])


def _finish(planned: dict, run: dict) -> dict:
    trained = {"private": True, "family": "mst", "events": EVENTS, "delta": planned["delta"],
               "epsilon": accounting.epsilon(EVENTS, planned["delta"])}
    return ledger.record_task.fn(planned, run["run_id"], None, trained)


def test_a_crashed_run_s_reservation_counts_as_spent(tmp_path, key_file):
    ids, source = _ids(), str(tmp_path / "crash.csv")
    crashed = _staged(tmp_path, ids, key_file)
    planned = _check(crashed, key_file, source)
    [entry] = ledger_store.entries(planned["population"])
    assert entry["reserved"] and not entry["complete"] and entry["epsilon"] == 1.0
    # ...and the run dies in training: nothing more is written, the reservation stays.
    [row] = ledger_store.budget(planned["population"])
    assert row["reserved"] == 1 and row["epsilon"] == pytest.approx(1.0)
    assert any("reserved by runs that did not finish" in line for line in notes(row))
    with pytest.raises(PrivacyError, match="1 of them reserved by runs not finished"):
        _check(_staged(tmp_path, ids, key_file), key_file, source, lifetime=1.5)
    assert len(ledger_store.entries(planned["population"])) == 1, "the refusal reserved none"
    # Resumed and finished, the run's entry is finalised with what it spent, not added again.
    _finish(planned, crashed)
    [entry] = ledger_store.entries(planned["population"])
    assert entry["complete"] and not entry["reserved"] and entry["events"] == ledger.compact(EVENTS)


def test_of_two_racing_runs_the_second_to_read_sees_the_other_s_reservation(
        tmp_path, key_file, monkeypatch):
    ids, source = _ids(), str(tmp_path / "race.csv")
    first = _check(_staged(tmp_path, ids, key_file), key_file, source, lifetime=1.5)
    second = _staged(tmp_path, ids, key_file)
    real, reads = ledger_store.entries, []

    def racing(population=None):
        """The second run's first read happened before the first run's reservation landed."""
        reads.append(population)
        found = real(population)
        return [e for e in found if e["population"] != first["population"]] \
            if len(reads) == 1 else found

    monkeypatch.setattr(ledger_store, "entries", racing)
    with pytest.raises(PrivacyError, match="reserved by runs not finished"):
        _check(second, key_file, source, lifetime=1.5)
    monkeypatch.setattr(ledger_store, "entries", real)
    assert len(reads) == 2, "it read the ledger again after reserving"
    [kept] = ledger_store.entries(first["population"])
    assert kept["run_id"] != second["run_id"], "the refused run withdrew its reservation"


def test_a_key_rotation_keeps_the_population_linked(tmp_path, key_file):
    ids, source = _ids(), str(tmp_path / "rotate.csv")
    before = _staged(tmp_path, ids, key_file)
    old = _finish(_check(before, key_file, source), before)
    rotation = keys.rotate(key_file)
    after = _staged(tmp_path, ids, key_file)
    planned = _check(after, key_file, source)
    assert planned["population"] != old["population"]  # new pseudonyms, new key
    assert planned["links"] == {"exact": [old["population"]], "assumed": [], "overlap": []}
    _finish(planned, after)
    [row] = ledger_store.budget(planned["population"])
    assert row["releases"] == 2 and row["linked"] == [old["population"]]
    assert row["populations"] == [old["population"], planned["population"]]
    two = row["epsilon"]
    # The link is in the ledger: destroying the old key does not reset the budget.
    keys.destroy(key_file, rotation.old)
    with pytest.raises(PrivacyError, match=r"over 2 release\(s\)"):
        _check(_staged(tmp_path, ids, key_file), key_file, source, lifetime=two + 0.1)


def test_after_the_old_key_is_destroyed_the_same_dataset_counts_conservatively(
        tmp_path, key_file):
    ids, source = _ids(), str(tmp_path / "shred.csv")
    before = _staged(tmp_path, ids, key_file)
    old = _finish(_check(before, key_file, source), before)
    keys.destroy(key_file, keys.rotate(key_file).old)  # before any run linked the two
    grown = _staged(tmp_path, ids + _ids(5), key_file)
    planned = _check(grown, key_file, source)
    assert planned["links"] == {"exact": [], "assumed": [old["population"]], "overlap": []}
    assert planned["spent"] == pytest.approx(old["composed"]["epsilon"])
    _finish(planned, grown)
    [row] = ledger_store.budget(planned["population"])
    assert row["releases"] == 2 and row["assumed"] == [old["population"]]
    assert any("counted conservatively" in line for line in notes(row))
    # Elsewhere, the same people carry the lineage they were found in (the filter of the
    # grown run finds them); other people, whom no key can match, carry nothing.
    elsewhere = str(tmp_path / "other.csv")
    same = _check(_staged(tmp_path, ids, key_file), key_file, elsewhere)
    assert same["links"]["assumed"] == [] and same["spent"] == pytest.approx(row["epsilon"])
    strangers = _check(_staged(tmp_path, _ids(), key_file), key_file, elsewhere + "2")
    assert math.isclose(strangers["spent"], 0.0)


def test_after_an_erasure_the_remaining_people_keep_what_they_spent(tmp_path, key_file):
    """Erasing one person gives the rest a new population key; the filters find them in the
    earlier releases, and `privgen budget` composes those with the new run's (it showed the
    new run alone before, while the check refused on the true figure)."""
    ids, source = _ids(), str(tmp_path / "erase.csv")
    first, second = (_staged(tmp_path, ids, key_file) for _ in range(2))
    _finish(_check(first, key_file, source), first)
    old = _finish(_check(second, key_file, source), second)
    rest = _staged(tmp_path, ids[1:], key_file)  # ids[0] erased
    planned = _check(rest, key_file, source)
    assert planned["population"] != old["population"]
    assert planned["links"]["overlap"] == [old["population"]]
    assert planned["spent"] == pytest.approx(old["composed"]["epsilon"])
    _finish(planned, rest)
    [row] = ledger_store.budget(planned["population"])
    assert row["releases"] == 3 and row["overlap"] == [old["population"]]
    assert row["epsilon"] > old["composed"]["epsilon"]
    assert any("found by their subject filters" in line for line in notes(row))
    strangers = _check(_staged(tmp_path, _ids(), key_file), key_file, source + "-other")
    assert strangers["links"]["overlap"] == []
