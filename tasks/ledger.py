"""The privacy-budget ledger's stages in the training flow (issue 15): the run's population of data
subjects, the check against ``train.privacy.lifetime_budget`` with the run's reservation, and the
entry finalised with what training spent. Composition: ``tasks.ledger_compose``; people across
keys: ``tasks.ledger_people``; the entries in the MLflow store: ``tasks.ledger_store``.

A population is the exact set of people behind a run (``population_key``); ``privgen budget``
composes per population, and across key rotations per lineage of populations. The check before
a run follows people instead: its members' earlier releases under other population keys (a
grown table, one after an erasure) count too, found by each run's subject Bloom filter
(``tasks.subjects``), under the current key or any retired key still held. Releases under a key
no longer held cannot be tested: those of the same dataset count as if everyone was in them.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models import accounting
from tasks import ledger_store as store
from tasks import tracking
from tasks.contract import DataContract
from tasks.errors import ConfigError, PrivacyError
from tasks.ledger_compose import compact, compose, exposures, forecast, refusal, same_config
from tasks.ledger_people import Membership, population_key, under_retired_keys

if TYPE_CHECKING:  # the anonymize stage's scrubbing dependencies are heavy
    from tasks.anonymize import AnonymizeConfig
    from tasks.train_config import TrainConfig


def subject_column(contract: DataContract, anonymize: AnonymizeConfig) -> str | None:
    """The column whose pseudonyms name data subjects (``anonymize.subject_column``, as
    erasure requests use it); None when it is not set and the contract has no single ID
    column: the run's dataset is then its population."""
    from tasks.anonymize import subject_column as named

    try:
        return named(contract, anonymize)
    except ConfigError:
        if anonymize.subject_column is not None:
            raise
        return None


def dataset_id(source: str) -> str:
    """Where a run's data came from (its resolved path or SQL source), as a digest: what ties
    a scheduled retrain's releases together when no key links their people any more."""
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def spend_digest(config: Any) -> str:
    """A digest of a pipeline config (``flows.config.PipelineConfig``) less what cannot change
    what a run spends (the lifetime budget, where it logs, what it does after training), so a
    scheduled run whose lifetime budget was raised is still known to repeat the last one."""
    tree = config.model_dump(mode="json", by_alias=True)
    for section in ("experiment", "workdir", "evaluate", "register", "promote", "generate"):
        tree.pop(section, None)
    tree["train"]["privacy"].pop("lifetime_budget", None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


# ---- the flow's stages ------------------------------------------------------------------------

def _domain_events(domain: dict | None) -> tuple[list[dict], float]:
    spend = (domain or {}).get("spend") or {}
    if not spend.get("releases"):
        return [], 0.0
    return [accounting.gaussian(spend["noise_multiplier"], 1.0, spend["releases"])], \
        float(spend.get("delta", 0.0))


def _assess(run: dict, people: list[str], known: list[dict],
            member: Membership) -> tuple[list[dict], dict, dict]:
    """The releases the run's most exposed person was in, what they compose to, and what the
    run will bring them to."""
    worst = [e for e in known if member.everyone(e)]
    for group in exposures(people, known, member):
        if forecast(group, run, known)["epsilon"] > forecast(worst, run, known)["epsilon"]:
            worst = group
    return worst, compose(worst, check=False), forecast(worst, run, known)


def reservation(planned: dict, run_id: str, known: list[dict]) -> dict:
    """The entry a run writes before it spends: what an earlier run of its config on as many
    records spent (its events: composed exactly), else its target ε (counted by basic
    composition until the run finishes)."""
    same = same_config(planned, known)
    entry = {k: planned[k] for k in ("population", "basis", "source_digest", "dataset", "key_id",
                                     "config_hash", "records", "lifetime_budget", "links",
                                     "private", "delta")}
    entry |= {"run_id": run_id, "family": "", "releases": "reserved", "complete": False,
              "reserved": True, "events": [], "threshold_delta": 0.0,
              "epsilon": planned["target_epsilon"] if planned["private"] else math.inf}
    if same and planned["private"]:
        entry |= {k: same[k] for k in ("events", "epsilon", "delta", "threshold_delta")}
    return entry


@task(name="ledger", cache_policy=NO_CACHE)
def check_task(anonymized_path: str, validated_path: str, source: str, source_digest: str,
               contract: DataContract, anonymize: AnonymizeConfig, cfg: TrainConfig, seed: int,
               config_hash: str, run_id: str, planted: int = 0, reserve: bool = True) -> dict:
    """Before anything is spent: the run's population, what its most exposed person has spent
    so far, and what this run will bring them to; PrivacyError, in one line, when that crosses
    ``train.privacy.lifetime_budget``. With ``reserve`` (not a preflight) the run's planned ε is
    then written to the ledger as a reservation and the check made again. Returns what
    ``record_task`` finalises the entry with."""
    from tasks import keys
    from tasks.train import resolve_delta, split_holdout

    p = cfg.privacy
    df = pd.read_parquet(anonymized_path)
    held = keys.held(anonymize.key_file)
    key = next(iter(held.values()))
    column = subject_column(contract, anonymize)
    column = column if column in df.columns else None  # dropped by anonymize: no ids to key
    population = population_key(df, column, key, source_digest)
    people = sorted(set(df[column].dropna().astype(str))) if column else []
    ids = pd.read_parquet(validated_path, columns=[column])[column] if column else None
    retired = under_retired_keys(ids, people, column, held, source_digest)
    del ids
    records = len(split_holdout(df, cfg.holdout_fraction, seed)[0]) + planted
    planned = {"population": population, "dataset": dataset_id(source),
               "basis": f"subject column {column}" if column else "source digest (no person id)",
               "source_digest": source_digest, "key_id": key.key_id, "config_hash": config_hash,
               "records": records, "delta": resolve_delta(p, records), "private": p.enabled,
               "target_epsilon": p.target_epsilon, "lifetime_budget": p.lifetime_budget}

    def check() -> tuple[list[dict], dict, dict, Membership]:
        known = [e for e in store.entries() if e["run_id"] != run_id]
        member = Membership(population, key.key_id, retired, planned["dataset"], source_digest,
                            known)
        worst, spent, ahead = _assess(planned, people, known, member)
        line = None if p.lifetime_budget is None else refusal(
            population, p.lifetime_budget, worst, spent["epsilon"], ahead)
        if line:
            raise PrivacyError(line)
        # The populations whose releases the most exposed person was in, found by their
        # subject filters (an erasure or a new extract gives the same people a new population
        # key): linked, so `privgen budget` composes what that person spent, not a fresh start.
        overlap = sorted({e["population"] for e in worst} - member.lineage
                         - set(member.exact) - set(member.assumed))
        planned["links"] = {"exact": member.exact, "assumed": member.assumed,
                            "overlap": overlap}
        return known, spent, ahead, member

    known, spent, ahead, member = check()
    if reserve:
        entry_id = store.record(reservation(planned, run_id, known), [])
        # Read the ledger again after the reservation is written: of two runs racing past the
        # first check, the one that reads second sees the other's reservation (each writes
        # before it reads, and the store commits a write before it returns), so they cannot
        # both pass on a budget only one of them fits. Both may refuse (each sees the other):
        # run one again. What is left: a store whose searches lag its writes (none that
        # privgen supports), and a run killed before it withdraws, whose reservation stays
        # counted (conservative).
        try:
            known, spent, ahead, member = check()
        except PrivacyError:
            store.withdraw(entry_id)
            raise
    tracking.set_tags(run_id, {store.POPULATION_TAG: population})
    logger = get_run_logger()
    logger.info("population %s: its most exposed member has spent ε %.3g; after this run ε "
                "%.3g (%s)", population, spent["epsilon"], ahead["epsilon"], ahead["how"])
    if member.exact or member.assumed:
        logger.info("linked across key rotation to %d population(s) exactly (%s); %d counted "
                    "as if everyone was in them (their key is no longer held)",
                    len(member.exact), ", ".join(member.exact) or "-", len(member.assumed))
    return planned | {"spent": spent["epsilon"], "forecast": ahead["epsilon"]}


@task(name="ledger-record", cache_policy=NO_CACHE)
def record_task(planned: dict, run_id: str, domain: dict | None, trained: dict) -> dict:
    """Finalise the run's ledger entry (its reservation) with what it spent: the domain
    stage's releases (``domain``: its plan, as the stage ran it) and the train stage's
    (``trained``). Returns the population's composition with this entry, for the datasheet."""
    events, threshold = _domain_events(domain)
    entry = {k: planned[k] for k in ("population", "basis", "source_digest", "key_id",
                                     "config_hash", "records", "lifetime_budget")}
    raw = events + list(trained.get("events") or [])
    entry |= {"run_id": run_id, "dataset": planned.get("dataset", ""),
              "links": planned.get("links", {}),
              "releases": "domains+train" if events else "train", "complete": True,
              "reserved": False, "private": bool(trained["private"]),
              "family": trained.get("family", "causal_lm"), "delta": trained["delta"],
              "epsilon": trained["epsilon"] if trained["private"] else math.inf,
              "events": compact(raw), "threshold_delta": threshold}
    entry_id = store.record(entry, raw)
    tracking.set_tags(run_id, {"privgen.ledger_entry": entry_id})
    rows = store.budget(planned["population"])  # its lineage, other runs' reservations too
    composed = {k: v for k, v in (rows[0] if rows else compose([entry])).items()
                if k in ("releases", "delta", "plain_sum", "epsilon", "epsilon_check",
                         "accountant", "reserved")}
    get_run_logger().info("ledger: population %s now at ε %.3g composed (plain sum %.3g)",
                          planned["population"], composed["epsilon"], composed["plain_sum"])
    return {"population": planned["population"], "recorded": True, "entry_id": entry_id,
            "lifetime_budget": planned["lifetime_budget"], "composed": composed}
