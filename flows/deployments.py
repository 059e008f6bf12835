"""Scheduled deployments of both flows, served by ``privgen serve`` (or a Prefect worker)."""

from __future__ import annotations

from prefect import flow

from flows.config import load_config
from flows.generation import generation_flow
from flows.training import training_flow
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
          out: str) -> list:
    return [
        scheduled_training.to_deployment(
            name="training", cron=train_cron, parameters={"config": config, "overrides": []},
            description="Retrain, evaluate and register the model on the configured input.",
            tags=["privgen"]),
        scheduled_generation.to_deployment(
            name="generation", cron=generate_cron,
            parameters={"model": model, "n": n, "out": out},
            description="Generate synthetic records from the current champion.",
            tags=["privgen"]),
    ]
