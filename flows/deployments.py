"""Scheduled deployments of both flows: served in-process by ``privgen serve``, or registered
to a Prefect work pool (``privgen serve --work-pool NAME``) whose ``prefect worker`` runs them."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.config import load_config
from flows.environment import _OFFLINE
from flows.generation import generation_flow
from flows.training import training_flow
from tasks.errors import ConfigError
from tasks.generate import GenerateConfig


@flow(name="privgen-scheduled-training")
def scheduled_training(config: str | None = None, overrides: list[str] | None = None) -> dict:
    """Reads the config when the run starts, so an edited file takes effect on the next run."""
    return training_flow(load_config(config, overrides or []))


@flow(name="privgen-scheduled-generation")
def scheduled_generation(model: str = "privgen-demo@champion", n: int = 1000,
                         out: str = "outputs/synthetic.parquet", seed: int = 7) -> dict:
    return generation_flow(GenerateConfig(model=model, n=n, out=out, seed=seed))


def build(config: str | None, train_cron: str, generate_cron: str, model: str, n: int,
          out: str, work_pool: str | None = None, workdir: Path | None = None) -> list:
    """The training and generation deployments. With ``work_pool`` they run on that pool's
    process workers: the flows are found by module path (privgen installed where the worker
    runs), each run starts in ``workdir`` (default: here), so relative paths (config, ``runs/``,
    ``outputs/``, the embedded ``mlflow.db``) mean what they mean for ``privgen serve``, and with
    privgen's offline defaults (no analytics, no hub) in its environment. No secret goes into a
    deployment: the worker's own environment supplies ``PRIVGEN_PSEUDONYM_KEY`` and the servers'
    credentials."""
    pool = {}
    if work_pool is not None:
        from prefect.deployments.runner import EntrypointType

        pool = {"work_pool_name": work_pool, "entrypoint_type": EntrypointType.MODULE_PATH,
                "job_variables": {"working_dir": str((workdir or Path.cwd()).resolve()),
                                  "env": dict(_OFFLINE)}}
    return [
        scheduled_training.to_deployment(
            name="training", cron=train_cron, parameters={"config": config, "overrides": []},
            description="Retrain, evaluate and register the model on the configured input.",
            tags=["privgen"], **pool),
        scheduled_generation.to_deployment(
            name="generation", cron=generate_cron,
            parameters={"model": model, "n": n, "out": out},
            description="Generate synthetic records from the current champion.",
            tags=["privgen"], **pool),
    ]


def register(deployments: list, work_pool: str) -> list[str]:
    """Creates the process work pool ``work_pool`` if it is missing and registers the
    deployments to it on the Prefect server ``PREFECT_API_URL`` names; returns their ids.

    Raises ConfigError when no server is configured (the ephemeral API dies with this process,
    so no worker could see the deployments) or the pool exists with another worker type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL
    from prefect.workers.process import ProcessWorker

    if not PREFECT_API_URL.value():
        raise ConfigError(f"--work-pool {work_pool}: set PREFECT_API_URL to the Prefect server "
                          "the workers poll (the embedded API ends with this command)")
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(work_pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=work_pool, type=ProcessWorker.type,
                base_job_template=ProcessWorker.get_default_base_job_template()))
        else:
            if existing.type != ProcessWorker.type:
                raise ConfigError(f"--work-pool {work_pool}: that pool's workers are of type "
                                  f"{existing.type!r}; privgen registers to a 'process' pool, "
                                  "name another pool")
    return [str(d.apply()) for d in deployments]
