"""The generation flow: a pinned model version → shards of filtered records → file + manifest."""

from __future__ import annotations

import time

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from tasks import tracking
from tasks.generate import (
    GenerateConfig,
    assemble_task,
    output_format,
    resolve_task,
    shard_dir,
    shard_plan,
    shard_task,
)


@flow(name="privgen-generation", log_prints=False, validate_parameters=False)
def _generation(cfg: GenerateConfig, experiment: str) -> dict:
    output_format(cfg.out)  # a bad file name fails before any sampling
    model = resolve_task(cfg.model)
    run_id = tracking.start_run(experiment, time.strftime("generate-%Y%m%d-%H%M%S"), {
        "privgen.flow": "generation", "privgen.model": cfg.model,
        "privgen.model_version": f"{model['name']}/{model['version']}"})
    status = "FAILED"
    try:
        directory = shard_dir(cfg.out)
        directory.mkdir(parents=True, exist_ok=True)
        plan = shard_plan(cfg.n, cfg.shard_size, cfg.seed)
        started = time.monotonic()
        futures = [shard_task.submit(model, s, cfg, str(directory), len(plan)) for s in plan]
        shards = [f.result() for f in futures]
        manifest = assemble_task(model, shards, cfg, str(directory),
                                 time.monotonic() - started, run_id)
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


