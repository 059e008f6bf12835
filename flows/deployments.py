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

TAG = "privgen"
# A worker's flow runs live in their own process sessions: stopping a worker leaves them
# running, and a lost machine takes worker and runs down together with nobody left to report.
# Each run sends a heartbeat every HEARTBEAT_S (Prefect's minimum); the server marks a privgen
# run CRASHED once none came for CRASHED_AFTER_S (four missed beats: a busy machine delays
# one, not four), and `privgen run --resume` continues it.
HEARTBEAT_S, CRASHED_AFTER_S = 30, 120
SILENT_RUNS = "privgen: crash runs whose heartbeats stopped"


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
                                  "env": {**_OFFLINE, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY":
                                          str(HEARTBEAT_S)}}}
    return [
        scheduled_training.to_deployment(
            name="training", cron=train_cron, parameters={"config": config, "overrides": []},
            description="Retrain, evaluate and register the model on the configured input.",
            tags=[TAG], **pool),
        scheduled_generation.to_deployment(
            name="generation", cron=generate_cron,
            parameters={"model": model, "n": n, "out": out},
            description="Generate synthetic records from the current champion.",
            tags=[TAG], **pool),
    ]


def register(deployments: list, work_pool: str) -> list[str]:
    """Creates the process work pool ``work_pool`` if it is missing, the automation that marks
    a privgen run CRASHED when its heartbeats stop (``SILENT_RUNS``), and registers the
    deployments to the pool on the Prefect server ``PREFECT_API_URL`` names; returns their ids.

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
        if not client.read_automations_by_name(SILENT_RUNS):
            client.create_automation(_crash_silent_runs())
    return [str(d.apply()) for d in deployments]


def _crash_silent_runs():
    """Prefect's recipe for runs whose process died (a proactive trigger on missing
    ``prefect.flow-run.heartbeat`` events), limited to runs tagged ``privgen``: other
    teams' runs on a shared server may beat less often."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    ended = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
    return AutomationCore(
        name=SILENT_RUNS,
        description=f"No heartbeat for {CRASHED_AFTER_S} s: the run's process is gone.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *ended},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "tag",
                           "prefect.resource.id": f"prefect.tag.{TAG}"},
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=CRASHED_AFTER_S)),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {CRASHED_AFTER_S} s; continue it with "
                    "`privgen run --resume RUN_ID` (the MLflow run id in its logs)")])
