"""The image training flow (issue 14): ingest + validate → preflight → train → evaluate + audit →
register → promotion gates. No anonymize stage: images are not anonymized, and the config's
``ingest.images_cleared`` statement (required) goes into the datasheet in its place."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.images_config import ImagePipelineConfig
from tasks import tracking
from tasks.audit_images import audit_images_task
from tasks.evaluate_images import evaluate_images_task
from tasks.images import ingest_images_task
from tasks.register import register_task
from tasks.train_images import log_png, preflight_task, sample_grid, split, train_task

CLEARED = ("images not anonymized: the data owner stated (ingest.images_cleared) that they "
           "were cleared for this use or show no person")


def _run_dirs(cfg: ImagePipelineConfig, run_name: str) -> dict[str, str]:
    base = Path(cfg.workdir) / run_name
    dirs = {"raw": base / "raw", "model": base / "model", "control": base / "control"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    dirs["raw"].chmod(0o700)  # the images are the private data
    return {k: str(v) for k, v in dirs.items()}


@flow(name="privgen-images", log_prints=False, validate_parameters=False)
def images_flow(cfg: ImagePipelineConfig, preflight_only: bool = False) -> dict:
    """``preflight_only``: stop after the privacy plan is checked, before any training."""
    logger = get_run_logger()
    run_name = time.strftime("images-%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    run_id = tracking.start_run(cfg.experiment, run_name, {"privgen.flow": "images"})
    logger.info("MLflow run %s (%s)", run_id, run_name)
    status = "FAILED"
    try:
        tracking.log_params(run_id, {"config.hash": cfg.digest(), "seed": cfg.seed})
        tracking.set_tags(run_id, {"config.hash": cfg.digest()})
        tracking.log_dict(run_id, cfg.model_dump(mode="json", by_alias=True), "config.json")
        d = _run_dirs(cfg, run_name)

        ingested = ingest_images_task(cfg.ingest, d["raw"], run_id)
        parts = split(ingested["canonical_path"], cfg.train.holdout_fraction, cfg.seed,
                      Path(d["raw"]))
        labels = cfg.ingest.labels
        plan = preflight_task(cfg.train, parts["train"], ingested["shape"], labels, run_id)
        if preflight_only:
            status = "FINISHED"
            return {"run_id": run_id, "rows": ingested, "preflight": plan}
        trained = train_task(cfg.train, parts["train"], labels, cfg.seed, d["model"], run_id)
        evaluated, gates, control, audit = _evaluate(cfg, trained, parts, labels, d, run_id)
        log_png(run_id, sample_grid(trained["model_dir"], 100, cfg.seed), "samples/grid.png")
        registered = register_task(
            trained["model_dir"], trained, evaluated, ingested["digest"], cfg.digest(),
            cfg.register_, cfg.promote, run_id,
            lineage={"source": ingested["source"], "validation": ingested,
                     "anonymization_statement": CLEARED},
            privacy=cfg.train.privacy.model_dump(mode="json"), control=control,
            power=(audit or {}).get("power"), extra_verdicts=gates)
        status = "FINISHED"
        return {"run_id": run_id, "rows": ingested, "preflight": plan, "train": trained,
                "eval": evaluated, "control": control, "model": registered,
                "audit_power": (audit or {}).get("power")}
    finally:
        tracking.end_run(run_id, status)


def _evaluate(cfg: ImagePipelineConfig, trained: dict, parts: dict, labels, d: dict,
              run_id: str) -> tuple[dict, dict, dict | None, dict | None]:
    """(the evaluation as registration reads it, the detector's gate, the control's audit, the
    audit); the non-private control is trained only for the audit, to show its power."""
    result = evaluate_images_task(trained["model_dir"], parts["train"], parts["holdout"],
                                  cfg.evaluate, cfg.seed, d["model"], run_id)
    metrics = result["metrics"]
    evaluated = {"usable_rate": metrics.get("eval.usable_rate"), "utility": metrics}
    if not cfg.audit.enabled:
        return evaluated, result["gates"], None, None
    control_dir = None
    if cfg.audit.control and cfg.train.privacy.enabled:
        plain = cfg.train.model_copy(update={"privacy": cfg.train.privacy.model_copy(
            update={"enabled": False})})
        control_dir = train_task.with_options(name="control-train-images")(
            plain, parts["train"], labels, cfg.seed, d["control"], run_id,
            prefix="control.")["model_dir"]
    audit = audit_images_task(trained["model_dir"], control_dir, parts["train"],
                              parts["holdout"], cfg.seed, run_id, audit=cfg.audit,
                              n=cfg.evaluate.synthetic_images, out_dir=d["model"])
    evaluated["audit"] = audit
    return evaluated, result["gates"], audit.get("control"), audit
