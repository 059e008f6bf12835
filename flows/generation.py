"""The generation flow: a registered model version → filtered synthetic records + manifest."""

from __future__ import annotations

import time

from prefect import flow

from tasks import tracking
from tasks.generate import GenerateConfig, generate_task


@flow(name="privgen-generation", log_prints=False, validate_parameters=False)
def generation_flow(cfg: GenerateConfig, experiment: str = "privgen-generation") -> dict:
    run_id = tracking.start_run(experiment, time.strftime("generate-%Y%m%d-%H%M%S"),
                                {"privgen.flow": "generation", "privgen.model": cfg.model})
    status = "FAILED"
    try:
        manifest = generate_task(cfg, run_id)
        tracking.set_tags(run_id, {"privgen.model_version":
                                   f"{manifest['model']['name']}/{manifest['model']['version']}"})
        status = "FINISHED"
        return manifest
    finally:
        tracking.end_run(run_id, status)
