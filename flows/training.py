"""The training flow: ingest → validate → anonymize → preflight → domains → train → evaluate →
register. The domains stage releases, under DP, the category lists and bounds the contract only
observed in the data: the model (of the family ``train.family`` names, or ``auto`` picks from the
released columns) is trained, evaluated and sampled under that released contract.

Each finished stage's result is journaled in the run's folder, so ``privgen run --resume RUN_ID``
continues a killed run in the same MLflow run: finished stages are skipped (their metrics are not
logged again) and training continues from its last checkpoint with its accountant history.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.config import PipelineConfig
from tasks import erasure, ledger, tracking
from tasks.anonymize import anonymize_task
from tasks.contract import DataContract
from tasks.domain import domain_task, plan_task
from tasks.errors import ConfigError
from tasks.evaluate import audit_report_task, evaluate_task
from tasks.ingest import IngestResult, ingest_task
from tasks.preflight import preflight_task
from tasks.register import register_task
from tasks.storage import write_json
from tasks.train import train_task
from tasks.validate import validate_task


def _run_dirs(cfg: PipelineConfig, run_name: str) -> dict[str, str]:
    base = Path(cfg.workdir) / run_name
    # raw/ holds copies of personal data (canonical input, quarantine): owner-only.
    dirs = {"raw": base / "raw", "anon": base / "anonymized", "model": base / "model",
            "control": base / "control", "journal": base / "stages"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    dirs["raw"].chmod(0o700)
    return {k: str(v) for k, v in dirs.items()}


class _Journal:
    """Stage results of one run, one JSON file each, written when the stage has finished."""

    def __init__(self, directory: str):
        self.directory = Path(directory)

    def stage(self, name: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
        path = self.directory / f"{name}.json"
        if path.is_file():
            get_run_logger().info("%s: finished before the resume, skipped", name)
            return json.loads(path.read_text())
        result = fn(*args, **kwargs)
        write_json(dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result,
                   path)
        return result


def _open_run(cfg: PipelineConfig, resume_run_id: str | None) -> tuple[str, str]:
    """A new MLflow run, or the killed run being resumed (checked, then marked running)."""
    if resume_run_id is None:
        run_name = time.strftime("run-%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        return tracking.start_run(cfg.experiment, run_name, {"privgen.flow": "training"}), run_name
    run = tracking.reopen_run(resume_run_id)
    if run["tags"].get("privgen.flow") != "training":
        raise ConfigError(f"--resume {resume_run_id}: not a privgen training run")
    if run["tags"].get("config.hash", cfg.digest()) != cfg.digest():
        raise ConfigError(f"--resume {resume_run_id}: the run was started with another config; "
                          "resume with its own (privgen run --resume loads it from the run)")
    return resume_run_id, run["run_name"]


@flow(name="privgen-training", log_prints=False, validate_parameters=False)
def training_flow(cfg: PipelineConfig, preflight_only: bool = False,
                  resume_run_id: str | None = None) -> dict:
    """``preflight_only``: stop after the plan is checked, before any training.
    ``resume_run_id``: continue that killed or failed run instead of starting a new one."""
    run_id, run_name = _open_run(cfg, resume_run_id)
    get_run_logger().info("MLflow run %s (%s)", run_id, run_name)
    status = "FAILED"
    try:
        if resume_run_id is None:
            tracking.log_params(run_id, {"config.hash": cfg.digest(), "seed": cfg.seed})
            tracking.set_tags(run_id, {"config.hash": cfg.digest()})
            tracking.log_dict(run_id, cfg.model_dump(mode="json", by_alias=True), "config.json")
        d = _run_dirs(cfg, run_name)
        j = _Journal(d["journal"])

        ingested = j.stage("ingest", ingest_task, cfg.ingest, d["raw"], run_id,
                           erased=erasure.ingest_suppressor(cfg.contract, cfg.anonymize))
        if isinstance(ingested, dict):  # read back from the journal
            ingested = IngestResult(**ingested)
        validated = j.stage("validate", validate_task, ingested.canonical_path, ingested.source,
                            cfg.contract, cfg.validate_, d["raw"], run_id)
        anonymized = j.stage("anonymize", anonymize_task, validated["validated_path"],
                             cfg.contract, cfg.anonymize, d["anon"], run_id)
        audit = cfg.audit
        planted = audit.n_canaries * audit.canary_repeats if audit.enabled else 0
        costs = j.stage("domain-plan", plan_task, anonymized["anonymized_path"], cfg.contract,
                        cfg.anonymize, cfg.train, cfg.seed, run_id, planted=planted)
        plan = j.stage("preflight", preflight_task, anonymized["anonymized_path"], cfg.train,
                       cfg.seed, run_id, planted=planted, domain=costs)
        # Reserves the run's planned ε in the ledger (not for a preflight): a run that fails
        # from here on has spent it.
        spend = j.stage("ledger", ledger.check_task, anonymized["anonymized_path"],
                        validated["validated_path"], ingested.source, ingested.source_digest,
                        cfg.contract, cfg.anonymize, cfg.train, cfg.seed,
                        ledger.spend_digest(cfg), run_id, planted=planted,
                        reserve=not preflight_only)
        if preflight_only:
            status = "FINISHED"
            return {"run_id": run_id, "rows": validated, "preflight": plan}
        domains = j.stage("domain", domain_task, anonymized["anonymized_path"], cfg.contract,
                          costs, cfg.train, cfg.seed, run_id)
        released = DataContract.model_validate(domains["contract"])
        resume = resume_run_id is not None
        trained = j.stage("train", train_task, anonymized["anonymized_path"], released,
                          cfg.train, cfg.seed, d["model"], run_id, resume=resume, audit=audit,
                          anonymize=cfg.anonymize, domain=costs,
                          label=cfg.evaluate.utility_label)
        spent = j.stage("ledger-train", ledger.record_task, spend, run_id, costs, trained)
        evaluated = j.stage("evaluate", evaluate_task, trained, released, cfg.evaluate,
                            audit, cfg.seed, d["model"], run_id, anonymize=cfg.anonymize)
        control = None
        if audit.enabled and audit.control and cfg.train.privacy.enabled:
            # The same training without DP: the audit must be able to flag it.
            # The same family, chosen once: the control differs from the model only in DP.
            family = trained.get("family", "causal_lm")
            sections = {family: trained["family_config"]} if trained.get("family_config") \
                is not None else {}
            plain = cfg.train.model_copy(update={"family": family, **sections,
                                                 "privacy": cfg.train.privacy.model_copy(
                                                     update={"enabled": False})})
            control_trained = j.stage("control-train",
                                      train_task.with_options(name="control-train"),
                                      anonymized["anonymized_path"], released, plain,
                                      cfg.seed, d["control"], run_id, resume=resume,
                                      audit=audit, prefix="control.",
                                      anonymize=cfg.anonymize)
            control = j.stage("control-evaluate",
                              evaluate_task.with_options(name="control-evaluate"),
                              control_trained, released, cfg.evaluate, audit, cfg.seed,
                              d["control"], run_id, prefix="control.",
                              anonymize=cfg.anonymize)
        report = None
        if audit.enabled:
            columns = {"DP model": evaluated} | ({"non-private control": control}
                                                 if control else {})
            report = j.stage("audit-report", audit_report_task, columns, run_id, audit)
        registered = j.stage("register", register_task, trained["model_dir"], trained,
                             evaluated, ingested.source_digest, cfg.digest(), cfg.register_,
                             cfg.promote, run_id,
                             lineage={"source": ingested.source, "validation": validated,
                                      "anonymized_path": anonymized["anonymized_path"],
                                      "domains": domains["report"], "ledger": spent},
                             privacy=cfg.train.privacy.model_dump(mode="json"), control=control,
                             power=report["power"] if report else None)
        status = "FINISHED"
        return {"run_id": run_id, "rows": validated, "preflight": plan, "train": trained,
                "eval": evaluated, "control": control, "model": registered,
                "audit_power": report["power"] if report else None}
    finally:
        tracking.end_run(run_id, status)
