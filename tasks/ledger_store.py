"""The privacy ledger in the MLflow store (issue 15): one MLflow run per training run in the
experiment ``privgen-ledger``, so the ledger outlives the machine, shows as one table in the UI
and is read back with one search, whichever experiment trained the model.

A run's entry is written as a reservation of its planned ε before anything is spent
(``tasks.ledger.check_task``) and rewritten with what it spent when training ends; a refused run
withdraws its reservation. ``budget`` composes the entries per lineage of populations
(``tasks.ledger_compose``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from tasks import tracking
from tasks.errors import ConfigError
from tasks.ledger_compose import compose, lineages

EXPERIMENT = "privgen-ledger"
# The training run's tag naming its population (``tasks.ledger.population_key``); the
# ledger's entries carry the same value.
POPULATION_TAG = "privgen.population"
_TAG = "ledger."


def population_of(run_id: str) -> str | None:
    """The population key a training run recorded (its ``POPULATION_TAG``), if any."""
    return tracking.client().get_run(run_id).data.tags.get(POPULATION_TAG)


def _experiment_id(create: bool) -> str | None:
    c = tracking.client()
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ConfigError(f"MLflow experiment {EXPERIMENT!r} (the privacy ledger, id "
                              f"{exp.experiment_id}) is deleted; restore it (mlflow experiments "
                              "restore, or in the MLflow UI): its releases still count")
        return exp.experiment_id
    return c.create_experiment(EXPERIMENT, tags={"privgen.ledger": "true"}) if create else None


def _entry(run: Any) -> dict:
    t = run.data.tags
    return {"entry_id": run.info.run_id, "run_id": t[_TAG + "run_id"],
            "population": t[_TAG + "population"], "basis": t.get(_TAG + "basis", ""),
            "source_digest": t.get(_TAG + "source_digest", ""),
            "dataset": t.get(_TAG + "dataset", ""),
            "key_id": t.get(_TAG + "key_id", ""), "family": t.get(_TAG + "family", ""),
            "config_hash": t.get(_TAG + "config_hash", ""),
            "records": int(t.get(_TAG + "records", 0)),
            "releases": t.get(_TAG + "releases", ""),
            "complete": t.get(_TAG + "complete") == "true",
            "reserved": t.get(_TAG + "reserved") == "true",
            "withdrawn": t.get(_TAG + "withdrawn") == "true",
            "private": t.get(_TAG + "private") == "true",
            "events": json.loads(t.get(_TAG + "events", "[]")),
            "links": json.loads(t.get(_TAG + "links", "{}")),
            "epsilon": float(t[_TAG + "epsilon"]), "delta": float(t[_TAG + "delta"]),
            "threshold_delta": float(t.get(_TAG + "threshold_delta", 0.0)),
            "lifetime_budget": (float(t[_TAG + "lifetime_budget"])
                                if t.get(_TAG + "lifetime_budget") not in (None, "None")
                                else None),
            "at": run.info.start_time}


def entries(population: str | None = None) -> list[dict]:
    """The ledger's entries (of ``population``, or all), oldest first, reservations of runs
    not finished included. Deleted entries count too: a release deleted in the UI was still
    made; a reservation its run withdrew (refused before spending) does not."""
    from mlflow.entities import ViewType

    exp_id = _experiment_id(create=False)
    if exp_id is None:
        return []
    where = f"tags.`{_TAG}population` = '{population}'" if population else ""
    found, token = [], None
    while True:
        page = tracking.client().search_runs(
            [exp_id], where, run_view_type=ViewType.ALL, max_results=1000,
            order_by=["attributes.start_time ASC"], page_token=token)
        found += [_entry(r) for r in page if _TAG + "population" in r.data.tags]
        token = page.token
        if not token:
            return [e for e in found if not e["withdrawn"]]


def record(entry: dict, raw_events: list[dict]) -> str:
    """Write ``entry`` (the keys ``_entry`` reads) for its training run: the run's entry is
    created once (its reservation) and rewritten as its releases are made, so a resumed run
    never counts twice. ``raw_events``: every mechanism as the family reported it, kept as an
    artifact beside the compacted events the tags hold. Returns the entry's MLflow run id."""
    exp_id = _experiment_id(create=True)
    c = tracking.client()
    existing = c.search_runs([exp_id], f"tags.`{_TAG}run_id` = '{entry['run_id']}'",
                             max_results=1)
    if existing:
        entry_id = existing[0].info.run_id
    else:
        entry_id = c.create_run(exp_id, run_name=f"{entry['population']}-{entry['run_id'][:8]}",
                                tags={"privgen.flow": "ledger"}).info.run_id
    tags = {k: v for k, v in entry.items() if k not in ("entry_id", "at", "events", "links")}
    tags = {_TAG + k: str(v).lower() if isinstance(v, bool) else v for k, v in tags.items()}
    tags[_TAG + "events"] = json.dumps(entry["events"], separators=(",", ":"))
    tags[_TAG + "links"] = json.dumps(entry.get("links", {}), separators=(",", ":"))
    tracking.set_tags(entry_id, tags)
    if math.isfinite(entry["epsilon"]) and not entry.get("reserved"):
        tracking.log_metrics(entry_id, {"epsilon": entry["epsilon"], "delta": entry["delta"]})
    if raw_events:
        tracking.log_dict(entry_id, raw_events, "events.json")
    if not entry.get("reserved"):  # a reservation stays RUNNING in the UI until finalised
        tracking.end_run(entry_id, "FINISHED")
    return entry_id


def withdraw(entry_id: str) -> None:
    """Void a reservation whose run was refused before it spent anything."""
    tracking.set_tags(entry_id, {_TAG + "withdrawn": "true"})
    tracking.end_run(entry_id, "KILLED")


def budget(dataset: str | None = None, lifetime: float | None = None) -> list[dict]:
    """Per lineage of populations (those with a population key or source digest starting with
    ``dataset``, or all): its entries' composition (``compose``), what is left of the lifetime
    budget (``lifetime``, else the setting the newest entry ran under; None when there is
    none), and how its populations were linked (across key rotations, or by shared people)."""
    rows = []
    for group in lineages(entries()):
        populations = list(dict.fromkeys(e["population"] for e in group))
        if dataset and not any(p.startswith(dataset) for p in populations) and not any(
                e["source_digest"].startswith(dataset) for e in group):
            continue
        limit = lifetime if lifetime is not None else group[-1]["lifetime_budget"]
        composed = compose(group)
        links = {kind: sorted({p for e in group for p in e["links"].get(kind, [])})
                 for kind in ("exact", "assumed", "overlap")}
        rows.append({"population": group[-1]["population"], "populations": populations,
                     "basis": group[-1]["basis"],
                     "source_digests": sorted({e["source_digest"] for e in group}),
                     "key_ids": sorted({e["key_id"] for e in group}), **composed,
                     "linked": links["exact"], "assumed": links["assumed"],
                     "overlap": links["overlap"],
                     "lifetime_budget": limit,
                     "left": None if limit is None else limit - composed["epsilon"],
                     "runs": [{k: e[k] for k in ("run_id", "population", "key_id", "family",
                                                "releases", "epsilon", "delta", "private",
                                                "reserved", "events")}
                              for e in group]})
    return rows


def of_version(name: str, version: str) -> dict | None:
    """The ``budget`` row of the population a registered model version was trained on (its
    training run's ``POPULATION_TAG``), now; None when the run recorded none."""
    run_id = tracking.client().get_model_version(name, version).run_id
    population = population_of(run_id) if run_id else None
    rows = budget(population) if population else []
    return rows[0] if rows else None
