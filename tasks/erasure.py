"""Erasure requests answered from lineage (issue 15): which training runs hold a subject's keyed
pseudonym, which model versions and synthetic batches came from them, and the suppression list
ingest applies to every later run. Nothing about a subject but its keyed pseudonym is stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.exceptions import MlflowException

from tasks import datasheet, keys, tracking
from tasks.anonymize import AnonymizeConfig, Key, keyed_pseudonym, subject_column
from tasks.contract import ColumnSpec, DataContract
from tasks.errors import ConfigError, InputError
from tasks.ingest import ERASED
from tasks.subjects import SUBJECTS, Bloom
from tasks.validate import cast

log = logging.getLogger(__name__)

EXPERIMENT = "privgen-erasure"  # one run per erasure request: the suppression list
REQUEST = "erasure/request.json"  # its artifact: the pseudonyms, never the raw id
PENDING = "erasure.pending"  # version and generation-run tag: the requests that affect it


# ---- the suppression list --------------------------------------------------------------------

def requests() -> list[dict]:
    """Every erasure request recorded: id (its run), when, and pseudonym per key id."""
    client = tracking.client()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    found = []
    for run in client.search_runs([exp.experiment_id], "tags.`privgen.flow` = 'erasure'",
                                  max_results=50_000):
        try:
            found.append(tracking.download_json(run.info.run_id, REQUEST))
        except (MlflowException, OSError):
            log.warning("erasure request %s has no %s; it cannot be applied", run.info.run_id,
                        REQUEST)
    return found


def subject_ids(values: pd.Series, spec: ColumnSpec) -> list[str | None]:
    """Ids as anonymize pseudonymizes them: in the contract's type, as text (an integer
    column's "00123" and "123" are one id); null where a value does not convert."""
    typed = cast(values.astype("string"), spec).astype("string")
    return [None if pd.isna(v) else str(v) for v in typed]


def suppressor(spec: ColumnSpec, held: dict[str, Key],
               recorded: list[dict] | None = None) -> Callable[[pa.Table], np.ndarray] | None:
    """What ingest calls per chunk: a mask of the rows whose subject column (``spec``) names an
    erased subject, tested under every key still held; None when nothing is to be suppressed."""
    recorded = requests() if recorded is None else recorded
    column = spec.name
    wanted: dict[str, set[str]] = {}
    orphaned = 0
    for r in recorded:
        usable = {k: p for k, p in r["pseudonyms"].items() if k in held and r["column"] == column}
        orphaned += not usable
        for key_id, pseudonym in usable.items():
            wanted.setdefault(key_id, set()).add(pseudonym)
    if orphaned:
        log.warning("%d erasure request(s) were made under keys no longer held (or for another "
                    "column than %s): their subjects' rows cannot be recognized", orphaned,
                    column)
    if not wanted:
        return None
    makers = {key_id: keyed_pseudonym(held[key_id], column) for key_id in wanted}

    def erased(table: pa.Table) -> np.ndarray:
        values = subject_ids(table[column].to_pandas(), spec)
        distinct = {v for v in values if v is not None}
        hit = {v for v in distinct
               if any(makers[k](v) in wanted[k] for k in makers)}
        return np.array([v in hit for v in values], dtype=bool)

    return erased


def ingest_suppressor(contract: DataContract,
                      cfg: AnonymizeConfig) -> Callable[[pa.Table], np.ndarray] | None:
    """The suppressor for a training run of ``contract``; None without erasure requests or
    without a subject column (a contract naming no person)."""
    recorded = requests()
    if not recorded:
        return None
    try:
        column = subject_column(contract, cfg)
    except ConfigError:
        if cfg.subject_column is not None:
            raise
        log.warning("%d erasure request(s) recorded, but the contract names no subject column "
                    "(anonymize.subject_column): nothing suppressed", len(recorded))
        return None
    spec = next(c for c in contract.columns if c.name == column)
    return suppressor(spec, keys.held(cfg.key_file), recorded)


def erased_rows(df: pd.DataFrame, contract: DataContract, cfg: AnonymizeConfig) -> np.ndarray:
    """For a command on one file already read (``privgen anonymize``): which rows of ``df``
    (ingest's strings) are of erased subjects; none without requests, or when ``df`` lacks
    the subject column (nothing to recognize them by)."""
    erased = ingest_suppressor(contract, cfg)
    column = subject_column(contract, cfg) if erased is not None else None
    if column not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return erased(pa.Table.from_pandas(df[[column]], preserve_index=False))


# ---- lineage: training runs, versions, batches -----------------------------------------------

@dataclass
class Affected:
    runs: list[str] = field(default_factory=list)  # training runs holding the subject
    versions: list[str] = field(default_factory=list)  # "name/version"
    batches: list[dict] = field(default_factory=list)  # generation run, version, file
    unlinkable: dict[str, list[str]] = field(default_factory=dict)  # key id → runs
    unrecorded: list[str] = field(default_factory=list)  # runs with no subject filter

    def caveats(self) -> list[str]:
        """What the search could not decide, one sentence each (CLI and Prefect report)."""
        out = [f"{len(runs)} run(s) under key {key_id}, not held here: not testable; no "
               "longer linkable to the subject if that key was destroyed"
               for key_id, runs in self.unlinkable.items()]
        if self.unrecorded:
            out.append(f"{len(self.unrecorded)} run(s) have no subject record (trained before "
                       "erasure support): cannot tell; treat them as affected or retire them")
        return out

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def training_runs() -> list:
    client = tracking.client()
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, "tags.`privgen.flow` = 'training'", max_results=50_000) \
        if ids else []


def versions_of(run_ids: Iterable[str]) -> list[str]:
    client = tracking.client()
    return sorted({f"{mv.name}/{mv.version}" for rid in run_ids
                   for mv in client.search_model_versions(f"run_id = '{rid}'")},
                  key=_version_order)


def _version_order(ref: str) -> tuple[str, int]:
    name, _, version = ref.rpartition("/")
    return name, int(version) if version.isdigit() else 0


def batches_of(versions: Iterable[str]) -> list[dict]:
    """Generation runs (and the files their manifests name) drawn from these versions."""
    wanted = set(versions)
    if not wanted:
        return []
    client = tracking.client()
    ids = [e.experiment_id for e in client.search_experiments()]
    found = []
    for run in client.search_runs(ids, "tags.`privgen.flow` = 'generation'",
                                  max_results=50_000):
        version = run.data.tags.get("privgen.model_version")
        if version not in wanted:
            continue
        batch = {"run_id": run.info.run_id, "version": version, "file": None, "sha256": None}
        try:
            manifests = [a.path for a in client.list_artifacts(run.info.run_id, "generation")
                         if a.path.endswith(".manifest.json")]
            if manifests:
                manifest = tracking.download_json(run.info.run_id, manifests[0])
                batch.update(file=manifest["file"]["path"], sha256=manifest["file"]["sha256"])
        except (MlflowException, OSError, KeyError):
            pass  # a generation that failed before its manifest: listed by its run
        found.append(batch)
    return found


def outputs_by_key() -> dict[str, dict[str, list]]:
    """Per key id: the training runs anonymized under it, their versions and batches; what
    destroying that key makes unlinkable to any person."""
    runs: dict[str, list[str]] = {}
    for run in training_runs():
        key_id = run.data.tags.get("privgen.key_id")
        if key_id:
            runs.setdefault(key_id, []).append(run.info.run_id)
    out = {}
    for key_id, ids in runs.items():
        versions = versions_of(ids)
        out[key_id] = {"runs": ids, "versions": versions, "batches": batches_of(versions)}
    return out


def find(pseudonyms: dict[str, str]) -> Affected:
    """The training runs whose subject filter holds the pseudonym made with their own key
    (``pseudonyms``: key id → the subject's pseudonym under that key), their versions and
    batches; runs under keys not held and runs without a filter are listed apart."""
    affected = Affected()
    for run in training_runs():
        rid, key_id = run.info.run_id, run.data.tags.get("privgen.key_id")
        if key_id is None:
            continue  # stopped before anonymizing: no subject's data reached it
        if key_id not in pseudonyms:
            affected.unlinkable.setdefault(key_id, []).append(rid)
            continue
        try:
            bloom = Bloom.from_dict(tracking.download_json(rid, SUBJECTS))
        except (MlflowException, OSError, KeyError):
            affected.unrecorded.append(rid)
            continue
        if pseudonyms[key_id] in bloom:
            affected.runs.append(rid)
    affected.versions = versions_of(affected.runs)
    affected.batches = batches_of(affected.versions)
    return affected


def erase(raw_id: str, spec: ColumnSpec, held: dict[str, Key]) -> tuple[str, Affected]:
    """Answer one erasure request: find what holds the subject, record the request (its
    pseudonym under every held key) and tag what it affects. Returns (request id, affected)."""
    column, (subject,) = spec.name, subject_ids(pd.Series([raw_id]), spec)
    if subject is None:
        raise InputError(f"the subject id does not convert to {column}'s type {spec.dtype} in "
                         "the data contract (it is not shown); check it against the request")
    pseudonyms = {key_id: keyed_pseudonym(key, column)(subject) for key_id, key in held.items()}
    affected = find(pseudonyms)
    request = tracking.start_run(EXPERIMENT, time.strftime("erase-%Y%m%d-%H%M%S"),
                                 {"privgen.flow": "erasure"},
                                 setting="(the erasure experiment is fixed)")
    try:
        tracking.log_dict(request, {"request": request, "column": column,
                                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "pseudonyms": pseudonyms}, REQUEST)
        tracking.log_dict(request, affected.to_dict(), "erasure/affected.json")
        tracking.set_tags(request, {"erasure.column": column,
                                    "erasure.key_ids": ",".join(sorted(pseudonyms)),
                                    "erasure.versions": len(affected.versions),
                                    "erasure.batches": len(affected.batches)})
        mark_pending(request, affected)
    finally:
        tracking.end_run(request)
    return request, affected


def mark_pending(request: str, affected: Affected) -> None:
    """Tag affected versions and generation runs ``erasure.pending`` (request ids, appended)."""
    client = tracking.client()
    for ref in affected.versions:
        name, _, version = ref.rpartition("/")
        mv = client.get_model_version(name, version)
        pending = _append(mv.tags.get(PENDING), request)
        client.set_model_version_tag(name, version, PENDING, pending)
        _update_datasheet(mv.run_id, pending.split(","))
    for batch in affected.batches:
        tags = client.get_run(batch["run_id"]).data.tags
        tracking.set_tags(batch["run_id"], {PENDING: _append(tags.get(PENDING), request)})
    for rid in affected.runs:
        tags = client.get_run(rid).data.tags
        tracking.set_tags(rid, {PENDING: _append(tags.get(PENDING), request)})


def _update_datasheet(run_id: str, pending: list[str]) -> None:
    """The version's datasheet (JSON and markdown, logged at registration) with its erasure
    state; a run registered before datasheets has none to update."""
    try:
        sheet = tracking.download_json(run_id, "datasheet/datasheet.json")
    except (MlflowException, OSError):
        return
    sheet["erasure"] = {"state": "pending", "requests": pending}
    tracking.log_dict(run_id, sheet, "datasheet/datasheet.json")
    try:
        text = datasheet.markdown(sheet)
    except KeyError:  # a sheet of an older shape: its JSON carries the state
        log.warning("datasheet of run %s: markdown not rewritten (older layout)", run_id)
        return
    tracking.log_text(run_id, text, "datasheet/datasheet.md")


def _append(existing: str | None, request: str) -> str:
    ids = [i for i in (existing or "").split(",") if i]
    return ",".join(ids if request in ids else [*ids, request])


def report_markdown(request: str, column: str, key_ids: list[str], affected: Affected) -> str:
    """The Prefect artifact of a request: ids, counts and lineage; no raw id, no pseudonym."""
    lines = ["# Erasure request", "", f"- request: `{request}` (MLflow experiment "
             f"`{EXPERIMENT}`)", f"- subject column: `{column}`; keys held: "
             f"{', '.join(f'`{k}`' for k in key_ids)}",
             f"- training runs holding the subject: {len(affected.runs)}",
             f"- model versions tagged `{PENDING}`: {', '.join(affected.versions) or 'none'}",
             f"- synthetic batches: {len(affected.batches)}"]
    lines += [f"  - batch `{b['file'] or '(no manifest)'}` from {b['version']} (run "
              f"`{b['run_id']}`)" for b in affected.batches]
    lines += ["- later runs: the subject's rows are quarantined at ingest with reason "
              f"`{ERASED}`"]
    lines += [f"- {c}" for c in affected.caveats()]
    return "\n".join(lines) + "\n"
