"""The privacy ledger's pure parts (populations, compaction, composition, forecast, refusal) and
its entries in the session's MLflow store (issue 15)."""

import math
import uuid

import pandas as pd
import pytest

from models import accounting
from tasks import ledger, ledger_compose, ledger_store
from tasks.anonymize import AnonymizeConfig, Key, pseudonymize
from tasks.contract import ColumnSpec, DataContract, Role
from tasks.errors import ConfigError
from tasks.ledger_people import population_key

KEY = Key(b"k" * 32, "kid")
DELTA = 1e-5


def _people(ids: list[str], key: Key = KEY) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pseudonymize(pd.Series(ids), key, "customer_id"),
                         "rating": range(len(ids))})


def test_the_same_people_share_a_population_whatever_their_rows():
    one = population_key(_people(["C-1", "C-2", "C-2", "C-3"]), "customer_id", KEY, "d1")
    again = population_key(_people(["C-3", "C-1", "C-2"]), "customer_id", KEY, "d2")
    other = population_key(_people(["C-1", "C-2", "C-4"]), "customer_id", KEY, "d1")
    assert one == again != other and one.startswith("pop-")
    # Under another key the same people are another population (their pseudonyms change).
    rotated = Key(b"r" * 32, "rid")
    assert population_key(_people(["C-1", "C-2", "C-3"], rotated), "customer_id",
                                 rotated, "d1") != one


def test_without_a_person_id_the_dataset_is_the_population():
    frame = pd.DataFrame({"rating": [1, 2]})
    assert population_key(frame, None, KEY, "abc") == \
        population_key(frame.head(1), None, KEY, "abc") != \
        population_key(frame, None, KEY, "abd")


def test_the_subject_column_is_anonymize_s_and_none_without_a_person_id():
    c = ColumnSpec
    demo = DataContract(columns=(c(name="ticket_id", role=Role.ID, unique=True),
                                 c(name="customer_id", role=Role.ID), c(name="rating")))
    named = AnonymizeConfig(subject_column="customer_id")
    assert ledger.subject_column(demo, named) == "customer_id"
    assert ledger.subject_column(DataContract(columns=(c(name="rating"),)),
                                 AnonymizeConfig()) is None
    assert ledger.subject_column(demo, AnonymizeConfig()) is None  # ambiguous, not named
    with pytest.raises(ConfigError, match=r"anonymize\.subject_column"):
        ledger.subject_column(demo, AnonymizeConfig(subject_column="rating"))


def test_compaction_composes_exactly_as_the_events_it_replaces():
    marginal = [accounting.gaussian(3.0), accounting.gaussian(4.0, 1.0, 2),
                accounting.zcdp(0.01), accounting.zcdp(0.02)]
    sgd = [accounting.gaussian(1.0, 0.01, 100), accounting.gaussian(1.0, 0.01, 50)]
    for events in (marginal, sgd, [accounting.gaussian(2.0), accounting.gaussian(3.0, 1.0, 4)],
                   marginal + sgd):
        short = ledger_compose.compact(events)
        assert len(short) < len(events)
        assert accounting.epsilon(short, DELTA) == pytest.approx(
            accounting.epsilon(events, DELTA), rel=1e-6)


def _entry(events, epsilon, *, private=True, config_hash="c1", records=100, delta=DELTA,
           threshold=0.0, complete=True, run_id=None):
    return {"run_id": run_id or uuid.uuid4().hex, "events": events, "epsilon": epsilon,
            "delta": delta, "threshold_delta": threshold, "private": private,
            "config_hash": config_hash, "records": records, "complete": complete}


def _mst_like(rho: float) -> list[dict]:
    """Marginal measurements and a selection spending ``rho`` in all, as MST does."""
    return [accounting.gaussian(1 / math.sqrt(2 * rho / 3), 1.0, 2), accounting.zcdp(rho / 3)]


def test_two_releases_compose_below_their_plain_sum_and_the_check_agrees():
    events = _mst_like(0.05)
    eps = accounting.epsilon(events, DELTA)
    composed = ledger_compose.compose([_entry(events, eps), _entry(events, eps)])
    assert composed["releases"] == 2 and composed["delta"] == pytest.approx(2 * DELTA)
    assert composed["plain_sum"] == pytest.approx(2 * eps)
    assert composed["epsilon"] < composed["plain_sum"]
    assert composed["epsilon_check"] == pytest.approx(composed["epsilon"], rel=0.05)
    assert "Rényi" in composed["accountant"]


def test_dpsgd_and_marginal_releases_compose_by_one_accountant():
    sgd = [accounting.gaussian(1.1, 0.05, 200)]
    entries = [_entry(sgd, accounting.epsilon(sgd, DELTA)),
               _entry(_mst_like(0.05), accounting.epsilon(_mst_like(0.05), DELTA))]
    composed = ledger_compose.compose(entries)
    union = accounting.epsilon([*sgd, *_mst_like(0.05)], 2 * DELTA)
    assert composed["epsilon"] == pytest.approx(union, rel=1e-6)
    assert composed["epsilon"] < composed["plain_sum"]


def test_thresholding_delta_is_taken_off_before_the_accountant():
    events = [accounting.gaussian(2.0, 1.0, 3)]
    plain = ledger_compose.compose([_entry(events, 1.0)])["epsilon"]
    thresholded = ledger_compose.compose([_entry(events, 1.0, threshold=DELTA / 2)])["epsilon"]
    assert thresholded == pytest.approx(accounting.epsilon(events, DELTA / 2))
    assert thresholded > plain


def test_a_non_private_release_leaves_no_bound():
    composed = ledger_compose.compose([_entry(_mst_like(0.05), 1.0), _entry([], math.inf,
                                                                  private=False)])
    assert math.isinf(composed["epsilon"]) and math.isinf(composed["plain_sum"])


def test_the_forecast_repeats_a_run_of_the_same_config_else_bounds_it():
    events = _mst_like(0.05)
    eps = accounting.epsilon(events, DELTA)
    prior = [_entry(events, eps)]
    run = {"config_hash": "c1", "records": 100, "private": True, "target_epsilon": eps,
           "delta": DELTA}
    same = ledger_compose.forecast(prior, run)
    assert same["epsilon"] == pytest.approx(ledger_compose.compose(prior * 2)["epsilon"])
    assert "same config" in same["how"]
    other = ledger_compose.forecast(prior, run | {"config_hash": "c2"})
    assert other["epsilon"] == pytest.approx(ledger_compose.compose(prior)["epsilon"] + eps)
    assert other["epsilon"] > same["epsilon"] and "basic composition" in other["how"]
    # An entry whose training never finished says nothing about what a run spends.
    assert "basic" in ledger_compose.forecast([_entry(events, eps, complete=False)], run)["how"]
    assert math.isinf(ledger_compose.forecast(prior, run | {"private": False})["epsilon"])


def test_a_run_that_would_cross_the_lifetime_budget_is_refused_in_one_line():
    prior = [_entry(_mst_like(0.05), 1.0)]
    ahead = {"epsilon": 2.5, "how": "as run x of the same config spent"}
    line = ledger_compose.refusal("pop-abc", 2.0, prior, 1.7, ahead)
    assert "lifetime_budget=2" in line and "pop-abc" in line and "2.5" in line
    assert "\n" not in line and "no budget was spent" in line
    assert ledger_compose.refusal("pop-abc", 3.0, prior, 1.7, ahead) is None


def test_entries_are_written_once_per_run_and_read_back_by_population():
    population, run_id = f"pop-{uuid.uuid4().hex[:16]}", uuid.uuid4().hex
    events = _mst_like(0.05)
    base = {"population": population, "basis": "subject column customer_id",
            "source_digest": "ab" * 32, "key_id": "kid", "config_hash": "c1", "records": 100,
            "lifetime_budget": 4.0, "run_id": run_id, "family": "", "private": True,
            "threshold_delta": 0.0, "delta": DELTA}
    first = ledger_store.record(base | {"releases": "domains", "complete": False,
                                  "events": events[:1], "epsilon": 0.5}, events[:1])
    again = ledger_store.record(base | {"releases": "domains+train", "complete": True,
                                  "family": "mst", "events": events, "epsilon": 1.2}, events)
    assert first == again, "a run's entry is rewritten, never added twice"
    [entry] = ledger_store.entries(population)
    assert entry["complete"] and entry["family"] == "mst" and entry["events"] == events
    assert entry["epsilon"] == 1.2 and entry["lifetime_budget"] == 4.0
    [row] = ledger_store.budget(population[:12])
    assert row["population"] == population
    assert row["epsilon"] == pytest.approx(accounting.epsilon(events, DELTA))
    assert row["left"] == pytest.approx(4.0 - row["epsilon"])
    assert population in {r["population"] for r in ledger_store.budget("ab" * 8)}


def test_the_most_exposed_person_decides_when_populations_overlap():
    """A grown table is a new population, but the people it shares with earlier runs have
    spent what those runs spent: the forecast follows them, not the population key."""
    import numpy as np

    old_a, old_b = _entry(_mst_like(0.05), 1.0), _entry(_mst_like(0.05), 1.0)
    elsewhere = _entry(_mst_like(0.2), 2.0)
    members = {old_a["run_id"]: {"p1", "p2"}, old_b["run_id"]: {"p1", "p2"},
               elsewhere["run_id"]: {"p9"}}

    def holds(entry, people):
        return np.array([p in members[entry["run_id"]] for p in people])

    groups = ledger_compose.exposures(["p1", "p2", "p3"], [old_a, old_b, elsewhere], holds)
    assert groups == [[old_a, old_b]], "p3, in none of them, is dominated by p1 and p2"
    assert ledger_compose.exposures(["p3", "p9"], [old_a, elsewhere], holds) == [[elsewhere]]
    assert ledger_compose.exposures(["p1"], [], holds) == [[]]
    # Disjoint exposures are kept apart: nobody was in both releases.
    both = ledger_compose.exposures(["p1", "p9"], [old_a, elsewhere], holds)
    assert sorted(len(g) for g in both) == [1, 1]


def test_raising_the_lifetime_budget_leaves_the_run_s_spend_digest_alone():
    from flows.config import load_config

    base = ledger.spend_digest(load_config(None, []))
    assert base == ledger.spend_digest(load_config(None, ["train.privacy.lifetime_budget=3",
                                                          "register.model_name=x"]))
    assert base != ledger.spend_digest(load_config(None, ["train.privacy.target_epsilon=3"]))
