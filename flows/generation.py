"""The generation flow: a pinned model version → shards of checked records → file + manifest
(an image model: a folder of PNGs + labels.csv + grid.png + manifest.json)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prefect import flow
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from models.base import IMAGE_FAMILIES
from tasks import tracking
from tasks.generate import (
    GenerateConfig,
    assemble_task,
    resolve_task,
    shard_dir,
    shard_plan,
    shard_task,
)
from tasks.generate_images import assemble_images_task, check_out, image_shard_task
from tasks.storage import output_format

# Progress events for a watching CLI; not run logs, so Prefect's API never receives them.
progress = logging.getLogger("privgen.progress")


@flow(name="privgen-generation", log_prints=False, validate_parameters=False)
def _generation(cfg: GenerateConfig, experiment: str) -> dict:
    if Path(cfg.out).suffix:  # a bad file name fails before any sampling (a folder: images)
        output_format(cfg.out)
    run_id = tracking.start_run(experiment, time.strftime("generate-%Y%m%d-%H%M%S"), {
        "privgen.flow": "generation", "privgen.model": cfg.model},
        setting="privgen generate --experiment NAME")
    status = "FAILED"
    try:
        tracking.log_params(run_id, {"config.hash": cfg.digest()})
        tracking.log_dict(run_id, cfg.model_dump(mode="json"), "config.json")
        model = resolve_task(cfg.model, cfg.condition)
        tracking.set_tags(run_id, {"privgen.model_version": f"{model['name']}/{model['version']}"})
        images = model["family"] in IMAGE_FAMILIES  # a folder of PNGs, else a records file
        if images:
            check_out(cfg.out)
            shard, assemble = image_shard_task, assemble_images_task
        else:
            output_format(cfg.out)
            shard, assemble = shard_task, assemble_task
        directory = shard_dir(cfg.out)
        directory.mkdir(parents=True, exist_ok=True)
        plan = shard_plan(cfg.n, cfg.shard_size, cfg.seed)
        started = time.monotonic()
        futures = [shard.submit(model, s, cfg, str(directory)) for s in plan]
        # Reported here, as shards finish, since shard tasks may run in other processes.
        shards, records, unit = [], 0, "images" if images else "records"
        progress.info("shards", extra={"stage": "generate", "progress": (0, cfg.n, unit)})
        for future in as_completed(futures):
            shards.append(future.result())
            records += shards[-1]["records"]
            progress.info("shard", extra={"stage": "generate",
                                          "progress": (records, cfg.n, unit)})
        manifest = assemble(model, shards, cfg, str(directory), time.monotonic() - started,
                            run_id)
        status = "FINISHED"
        return manifest
    finally:
        tracking.end_run(run_id, status)


def task_runner(cfg: GenerateConfig):
    """Scale-out through an existing engine: Prefect's thread pool or a Dask cluster."""
    if cfg.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        # One single-threaded process per worker: torch's own threads stay within its core.
        return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    return ThreadPoolTaskRunner(max_workers=cfg.workers)


def generation_flow(cfg: GenerateConfig, experiment: str = "privgen-generation") -> dict:
    """Run the flow with ``cfg.workers`` shards at a time on the configured task runner."""
    return _generation.with_options(task_runner=task_runner(cfg))(cfg, experiment)
