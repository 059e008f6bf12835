"""The training flow: ingest → validate → anonymize → preflight → train → evaluate → register."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow

from flows.config import PipelineConfig
from tasks import tracking
from tasks.anonymize import anonymize_task
from tasks.evaluate import evaluate_task
from tasks.ingest import ingest_task
from tasks.preflight import preflight_task
from tasks.register import register_task
from tasks.train import train_task
from tasks.validate import validate_task


def _run_dirs(cfg: PipelineConfig, run_name: str) -> dict[str, str]:
    base = Path(cfg.workdir) / run_name
    # raw/ holds copies of personal data (canonical input, quarantine): owner-only.
    dirs = {"raw": base / "raw", "anon": base / "anonymized", "model": base / "model"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    dirs["raw"].chmod(0o700)
    return {k: str(v) for k, v in dirs.items()}


@flow(name="privgen-training", log_prints=False, validate_parameters=False)
def training_flow(cfg: PipelineConfig, preflight_only: bool = False) -> dict:
    """``preflight_only``: stop after the plan is checked, before any training."""
    run_name = time.strftime("run-%Y%m%d-%H%M%S")
    run_id = tracking.start_run(cfg.experiment, run_name, {"privgen.flow": "training"})
    status = "FAILED"
    try:
        tracking.log_params(run_id, {"config.hash": cfg.digest(), "seed": cfg.seed})
        tracking.log_dict(run_id, cfg.model_dump(mode="json", by_alias=True), "config.json")
        d = _run_dirs(cfg, run_name)

        ingested = ingest_task(cfg.ingest, d["raw"], run_id)
        validated = validate_task(ingested.canonical_path, ingested.source, cfg.contract,
                                  cfg.validate_,
                                  d["raw"], run_id)
        anonymized = anonymize_task(validated["validated_path"], cfg.contract, cfg.anonymize,
                                    d["anon"], run_id)
        plan = preflight_task(anonymized["anonymized_path"], cfg.train, cfg.seed, run_id)
        if preflight_only:
            status = "FINISHED"
            return {"run_id": run_id, "rows": validated, "preflight": plan}
        trained = train_task(anonymized["anonymized_path"], cfg.contract, cfg.train, cfg.seed,
                             d["model"], run_id)
        evaluated = evaluate_task(trained["model_dir"], trained["holdout_path"], cfg.evaluate,
                                  cfg.seed, d["model"], run_id)
        registered = register_task(trained["model_dir"], trained, evaluated,
                                   ingested.source_digest, cfg.digest(), cfg.register,
                                   cfg.promote, run_id)
        status = "FINISHED"
        return {"run_id": run_id, "rows": validated, "preflight": plan, "train": trained,
                "eval": evaluated, "model": registered}
    finally:
        tracking.end_run(run_id, status)
