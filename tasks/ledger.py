"""The privacy-budget ledger: every DP release on a population of data subjects, kept in the
MLflow store, and the composed ε of all of them by one accountant (issue 15).

One entry per training run, in the experiment ``privgen-ledger`` (one MLflow run each, so the
ledger outlives the machine, shows as one table in the UI and is read back with one search,
whichever experiment trained the model). An entry is written as each release is made: after
the domain stage (its Gaussian histograms), then again after training with the family's own
mechanism added, so a run that fails after the domains still has its spend on record.

A population is the exact set of people behind a run (``population_key``); ``privgen budget``
composes per population. The check before a run follows people instead: its members' earlier
releases under other population keys (a grown table, one after an erasure) count too, found
by each run's subject Bloom filter (``tasks.subjects``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models import accounting
from tasks import tracking
from tasks.contract import DataContract
from tasks.errors import ConfigError, PrivacyError

if TYPE_CHECKING:  # the anonymize stage's scrubbing dependencies are heavy
    from tasks.anonymize import AnonymizeConfig, Key
    from tasks.train_config import TrainConfig

# The training run's tag naming its population (``population_key``); the ledger's entries
# carry the same value.
POPULATION_TAG = "privgen.population"


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


def spend_digest(config: Any) -> str:
    """A digest of a pipeline config (``flows.config.PipelineConfig``) less what cannot change
    what a run spends (the lifetime budget, where it logs, what it does after training), so a
    scheduled run whose lifetime budget was raised is still known to repeat the last one."""
    tree = config.model_dump(mode="json", by_alias=True)
    for section in ("experiment", "workdir", "evaluate", "register", "promote", "generate"):
        tree.pop(section, None)
    tree["train"]["privacy"].pop("lifetime_budget", None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def population_of(run_id: str) -> str | None:
    """The population key a training run recorded (its ``POPULATION_TAG``), if any."""
    return tracking.client().get_run(run_id).data.tags.get(POPULATION_TAG)


# ---- pure: events and their composition ---------------------------------------------------

def compact(events: list[dict]) -> list[dict]:
    """``events`` in the fewest events that compose exactly alike: Gaussians at sampling rate 1
    fold into one (a composition of Gaussian mechanisms of sensitivity 1 is the Gaussian of
    1/σ² = Σ steps/σ², its privacy loss exactly), subsampled ones of the same (σ, q) add their
    steps, ρ-zCDP events add their ρ. Keeps a ledger entry a few events long (AIM measures
    once per round)."""
    full = sum(e["steps"] / e["sigma"] ** 2 for e in events
               if e["kind"] == "gaussian" and e["q"] >= 1 and e["steps"] > 0)
    sampled: dict[tuple[float, float], int] = {}
    for e in events:
        if e["kind"] == "gaussian" and e["q"] < 1 and e["steps"] > 0:
            sampled[(e["sigma"], e["q"])] = sampled.get((e["sigma"], e["q"]), 0) + e["steps"]
    rho = sum(e["rho"] for e in events if e["kind"] == "zcdp")
    out = [accounting.gaussian(1 / math.sqrt(full))] if full else []
    out += [accounting.gaussian(s, q, n) for (s, q), n in sorted(sampled.items())]
    return out + ([accounting.zcdp(rho)] if rho else [])


def compose(entries: list[dict]) -> dict:
    """The composed ε of ``entries`` (ledger entries of one population) by one accountant over
    the union of their events (``models.accounting.epsilon``: PRV when all are Gaussian, else
    Rényi DP), the second accountant's figure for the same events, and the plain sum of the
    entries' own ε, all at δ = the sum of their δ (what adding them up would claim; each entry's
    thresholding δ, outside any accountant, is taken off first). A non-private entry makes
    every figure ∞."""
    delta = sum(e["delta"] for e in entries)
    summary = {"releases": len(entries), "delta": delta,
               "plain_sum": sum(e["epsilon"] for e in entries)}
    if any(not e["private"] for e in entries):
        return summary | {"epsilon": math.inf, "epsilon_check": math.inf,
                          "accountant": "none: a non-private release"}
    events = compact([ev for e in entries for ev in e["events"]])
    left = delta - sum(e["threshold_delta"] for e in entries)
    gaussian_only = all(ev["kind"] == "gaussian" for ev in events)
    return summary | {
        "epsilon": accounting.epsilon(events, left, "prv") if entries else 0.0,
        "epsilon_check": accounting.epsilon_check(events, left) if entries else 0.0,
        "accountant": ("PRV (Opacus)" if gaussian_only else "Rényi DP (Opacus)")
        + "; check: dp-accounting " + ("PLD" if gaussian_only else "RDP")}


def forecast(prior: list[dict], run: dict, known: list[dict] | None = None) -> dict:
    """What people who were in the ``prior`` releases will have spent after a run that is
    about to start: ``run`` holds its ``config_hash``, ``records``, ``private``,
    ``target_epsilon`` and ``delta``. A run of the same config on as many records as an
    earlier entry (of ``known``, default ``prior``) spends what that one did (calibration is
    deterministic), composed exactly; otherwise the bound of basic composition: what the
    prior releases compose to, plus the run's own target ε, at the sum of the δ."""
    if not run["private"]:
        return {"epsilon": math.inf, "how": "the run is not private"}
    same = [e for e in (prior if known is None else known)
            if e["config_hash"] == run["config_hash"]
            and e["records"] == run["records"] and e["complete"]]
    if same:
        composed = compose([*prior, same[-1]])
        return {"epsilon": composed["epsilon"], "delta": composed["delta"],
                "how": f"as run {same[-1]['run_id']} of the same config spent"}
    before = compose(prior)
    return {"epsilon": before["epsilon"] + run["target_epsilon"],
            "delta": before["delta"] + run["delta"],
            "how": "prior releases composed plus this run's target ε (basic composition)"}


def exposures(people: Iterable[str], prior: list[dict],
              holds: Callable[[dict, list[str]], np.ndarray]) -> list[list[dict]]:
    """The sets of ``prior`` entries that some of ``people`` were in, the largest only (a
    person in fewer of them has spent less): what the most exposed among them has spent is
    one of these composed. ``holds(entry, people)``: whether each is in the entry's data (a
    Bloom filter's answer may over-report, which only makes the forecast safer)."""
    people = list(people)
    if not people or not prior:
        return [[]]
    inside = np.column_stack([holds(e, people) for e in prior])
    signatures = {tuple(np.flatnonzero(row)) for row in inside}
    largest = [s for s in signatures if not any(set(s) < set(t) for t in signatures)]
    return [[prior[i] for i in s] for s in sorted(largest)]


def refusal(population: str, lifetime: float, prior: list[dict], spent: float,
            ahead: dict) -> str | None:
    """The one line a run that would cross ``lifetime`` stops with; None when it fits."""
    if ahead["epsilon"] <= lifetime:
        return None
    return (f"train.privacy.lifetime_budget={lifetime:g}: the most exposed data subject of "
            f"this run (population {population}) has spent ε {spent:.3g} over {len(prior)} "
            f"release(s), and this run would bring them to ε {ahead['epsilon']:.3g} "
            f"({ahead['how']}); no budget was spent. Lower train.privacy.target_epsilon, or "
            "raise the lifetime budget with a written reason (see privgen budget)")


# ---- the ledger in the MLflow store ---------------------------------------------------------

EXPERIMENT = "privgen-ledger"
_TAG = "ledger."


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
            "key_id": t.get(_TAG + "key_id", ""), "family": t.get(_TAG + "family", ""),
            "config_hash": t.get(_TAG + "config_hash", ""),
            "records": int(t.get(_TAG + "records", 0)),
            "releases": t.get(_TAG + "releases", ""),
            "complete": t.get(_TAG + "complete") == "true",
            "private": t.get(_TAG + "private") == "true",
            "events": json.loads(t.get(_TAG + "events", "[]")),
            "epsilon": float(t[_TAG + "epsilon"]), "delta": float(t[_TAG + "delta"]),
            "threshold_delta": float(t.get(_TAG + "threshold_delta", 0.0)),
            "lifetime_budget": (float(t[_TAG + "lifetime_budget"])
                                if t.get(_TAG + "lifetime_budget") not in (None, "None")
                                else None),
            "at": run.info.start_time}


def entries(population: str | None = None) -> list[dict]:
    """The ledger's entries (of ``population``, or all), oldest first. Deleted entries count
    too: a release deleted in the UI was still made."""
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
            return found


def record(entry: dict, raw_events: list[dict]) -> str:
    """Write ``entry`` (the keys ``_entry`` reads) for its training run: the run's entry is
    created once and rewritten as its releases are made, so a resumed run never counts
    twice. ``raw_events``: every mechanism as the family reported it, kept as an artifact
    beside the compacted events the tags hold. Returns the entry's MLflow run id."""

    exp_id = _experiment_id(create=True)
    c = tracking.client()
    existing = c.search_runs([exp_id], f"tags.`{_TAG}run_id` = '{entry['run_id']}'",
                             max_results=1)
    if existing:
        entry_id = existing[0].info.run_id
    else:
        entry_id = c.create_run(exp_id, run_name=f"{entry['population']}-{entry['run_id'][:8]}",
                                tags={"privgen.flow": "ledger"}).info.run_id
    tags = {k: v for k, v in entry.items() if k not in ("entry_id", "at", "events")}
    tags = {_TAG + k: str(v).lower() if isinstance(v, bool) else v for k, v in tags.items()}
    tags[_TAG + "events"] = json.dumps(entry["events"], separators=(",", ":"))
    tracking.set_tags(entry_id, tags)
    if math.isfinite(entry["epsilon"]):
        tracking.log_metrics(entry_id, {"epsilon": entry["epsilon"], "delta": entry["delta"]})
    tracking.log_dict(entry_id, raw_events, "events.json")
    tracking.end_run(entry_id, "FINISHED")
    return entry_id


def budget(dataset: str | None = None, lifetime: float | None = None) -> list[dict]:
    """Per population (those whose key or source digest starts with ``dataset``, or all): its
    entries' composition (``compose``) and what is left of the lifetime budget (``lifetime``,
    else the setting the newest entry ran under; None when there is none)."""
    rows, by_population = [], {}
    for e in entries():
        by_population.setdefault(e["population"], []).append(e)
    for population, group in by_population.items():
        if dataset and not (population.startswith(dataset) or any(
                e["source_digest"].startswith(dataset) for e in group)):
            continue
        limit = lifetime if lifetime is not None else group[-1]["lifetime_budget"]
        composed = compose(group)
        rows.append({"population": population, "basis": group[-1]["basis"],
                     "source_digests": sorted({e["source_digest"] for e in group}),
                     "key_ids": sorted({e["key_id"] for e in group}), **composed,
                     "lifetime_budget": limit,
                     "left": None if limit is None else limit - composed["epsilon"],
                     "runs": [{k: e[k] for k in ("run_id", "family", "releases", "epsilon",
                                                "delta", "private", "events")}
                              for e in group]})
    return rows


def of_version(name: str, version: str) -> dict | None:
    """The ``budget`` row of the population a registered model version was trained on (its
    training run's ``POPULATION_TAG``), now; None when the run recorded none."""
    run_id = tracking.client().get_model_version(name, version).run_id
    population = population_of(run_id) if run_id else None
    rows = budget(population) if population else []
    return rows[0] if rows else None


# ---- the flow's stages ------------------------------------------------------------------------

def _domain_events(domain: dict | None) -> tuple[list[dict], float]:
    spend = (domain or {}).get("spend") or {}
    if not spend.get("releases"):
        return [], 0.0
    return [accounting.gaussian(spend["noise_multiplier"], 1.0, spend["releases"])], \
        float(spend.get("delta", 0.0))


def _holds(population: str, key_id: str) -> Callable[[dict, list[str]], np.ndarray]:
    """Membership of pseudonyms in an entry's data: all of them for an entry of the same
    population; else the training run's subject filter (``tasks.subjects``, written by the
    anonymize stage) when it was made under the same key; else none (a run under another
    key, or without a person id, cannot be linked)."""
    from mlflow.exceptions import MlflowException

    from tasks.subjects import SUBJECTS, Bloom, _positions

    def holds(entry: dict, people: list[str]) -> np.ndarray:
        if entry["population"] == population:
            return np.ones(len(people), dtype=bool)
        if entry["key_id"] != key_id or not entry["basis"].startswith("subject"):
            return np.zeros(len(people), dtype=bool)
        try:
            bloom = Bloom.from_dict(tracking.download_json(entry["run_id"], SUBJECTS))
        except (MlflowException, OSError, KeyError):
            return np.zeros(len(people), dtype=bool)
        bits = np.unpackbits(np.frombuffer(bloom.bits, dtype=np.uint8))
        return bits[_positions(people, bloom.m, bloom.k)].all(axis=1)

    return holds


@task(name="ledger", cache_policy=NO_CACHE)
def check_task(anonymized_path: str, source_digest: str, contract: DataContract,
               anonymize: AnonymizeConfig, cfg: TrainConfig, seed: int, config_hash: str,
               run_id: str, planted: int = 0) -> dict:
    """Before anything is spent: the run's population, what it has spent so far, and what it
    will have spent after this run; PrivacyError, in one line, when that crosses
    ``train.privacy.lifetime_budget``. Returns what ``record_task`` writes with each release."""
    from tasks.anonymize import load_key
    from tasks.train import resolve_delta, split_holdout

    p = cfg.privacy
    df = pd.read_parquet(anonymized_path)
    key = load_key(anonymize.key_file)
    column = subject_column(contract, anonymize)
    column = column if column in df.columns else None  # dropped by anonymize: no ids to key
    population = population_key(df, column, key, source_digest)
    records = len(split_holdout(df, cfg.holdout_fraction, seed)[0]) + planted
    delta = resolve_delta(p, records)
    known = [e for e in entries() if e["run_id"] != run_id]
    people = sorted(set(df[column].dropna().astype(str))) if column else []
    run = {"config_hash": config_hash, "records": records, "private": p.enabled,
           "target_epsilon": p.target_epsilon, "delta": delta}
    worst = [e for e in known if e["population"] == population]
    for group in exposures(people, known, _holds(population, key.key_id)):
        if forecast(group, run, known)["epsilon"] > forecast(worst, run, known)["epsilon"]:
            worst = group
    spent, ahead = compose(worst), forecast(worst, run, known)
    tracking.set_tags(run_id, {POPULATION_TAG: population})
    logger = get_run_logger()
    logger.info("population %s: its most exposed member has spent ε %.3g over %d release(s); "
                "after this run ε %.3g (%s)", population, spent["epsilon"], len(worst),
                ahead["epsilon"], ahead["how"])
    if p.lifetime_budget is not None:
        line = refusal(population, p.lifetime_budget, worst, spent["epsilon"], ahead)
        if line:
            raise PrivacyError(line)
    return {"population": population,
            "basis": f"subject column {column}" if column else "source digest (no person id)",
            "source_digest": source_digest, "key_id": key.key_id, "config_hash": config_hash,
            "records": records, "delta": delta, "private": p.enabled,
            "lifetime_budget": p.lifetime_budget, "spent": spent["epsilon"],
            "forecast": ahead["epsilon"]}


@task(name="ledger-record", cache_policy=NO_CACHE)
def record_task(planned: dict, run_id: str, domain: dict | None,
                trained: dict | None = None) -> dict:
    """Write the run's ledger entry as its releases stand: the domain stage's (``domain``: its
    plan, as the stage ran it), then with ``trained`` the train stage's result. Returns the
    population's composition with this entry, for the datasheet."""
    events, threshold = _domain_events(domain)
    entry = {k: planned[k] for k in ("population", "basis", "source_digest", "key_id",
                                     "config_hash", "records", "lifetime_budget")}
    if trained is None:
        entry |= {"releases": "domains", "complete": False, "private": planned["private"],
                  "family": "", "delta": planned["delta"],
                  "epsilon": accounting.epsilon(events, planned["delta"] - threshold)}
    else:
        entry["releases"] = "domains+train" if events else "train"
        events = events + list(trained.get("events") or [])
        entry |= {"complete": True, "private": bool(trained["private"]),
                  "family": trained.get("family", "causal_lm"), "delta": trained["delta"],
                  "epsilon": trained["epsilon"] if trained["private"] else math.inf}
    result = {"population": planned["population"], "recorded": bool(events or trained),
              "lifetime_budget": planned["lifetime_budget"]}
    if result["recorded"]:
        entry |= {"run_id": run_id, "events": compact(events), "threshold_delta": threshold}
        result["entry_id"] = record(entry, events)
        tracking.set_tags(run_id, {"privgen.ledger_entry": result["entry_id"]})
    result["composed"] = compose(entries(planned["population"]))
    get_run_logger().info("ledger: population %s now at ε %.3g composed (plain sum %.3g)",
                          planned["population"], result["composed"]["epsilon"],
                          result["composed"]["plain_sum"])
    return result
