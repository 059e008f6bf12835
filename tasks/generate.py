"""Generate: sample records from a registered model version, filter them, write Parquet and
a manifest saying which model made them."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

import mlflow
from tasks import pii, tracking
from tasks.errors import GenerationError, RegistryError
from tasks.storage import file_digest, write_json, write_parquet

# Progress events for a watching CLI; not run logs, so Prefect's API never receives them.
progress = logging.getLogger("privgen.progress")


class GenerateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "privgen-demo@champion"
    n: int = Field(default=1000, ge=1, le=10_000_000)
    seed: int = 7
    # Below 1 trades diversity for well-formed values; small DP models need the help.
    temperature: float = Field(default=0.8, gt=0.0)
    top_k: int = Field(default=0, ge=0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    batch_size: int = Field(default=128, ge=1)
    out: Path = Path("outputs/synthetic.parquet")


def resolve(ref: str) -> tuple[str, str, str | None]:
    """``name@alias``, ``name/version`` or ``name`` (its champion) → (name, version, alias).

    The version is pinned here, once, so a promotion during the batch cannot mix two models."""
    client = tracking.client()
    if "@" in ref:
        name, alias = ref.split("@", 1)
    elif "/" in ref:
        name, version = ref.split("/", 1)
        try:
            client.get_model_version(name, version)
        except mlflow.exceptions.MlflowException:
            raise RegistryError(f"model {name!r} has no version {version}; "
                                "see `privgen models`") from None
        return name, version, None
    else:
        name, alias = ref, "champion"
    try:
        return name, str(client.get_model_version_by_alias(name, alias).version), alias
    except mlflow.exceptions.MlflowException:
        raise RegistryError(
            f"model {name!r} has no version with alias @{alias}; run `privgen run` first or "
            "see `privgen models` for what exists"
        ) from None


def has_pii(row: dict) -> bool:
    return any(isinstance(v, str) and pii.pattern_spans(v) for v in row.values())


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(cfg: GenerateConfig, run_id: str) -> dict:
    logger = get_run_logger()
    name, version, alias = resolve(cfg.model)
    mv = tracking.client().get_model_version(name, version)
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    rejected = {"pii": 0}

    def keep(row: dict) -> bool:
        if has_pii(row):
            rejected["pii"] += 1
            return False
        return True

    started = time.monotonic()
    sample = loaded.unwrap_python_model().sample(
        cfg.n, cfg.seed, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
        batch_size=cfg.batch_size, keep=keep,
        on_batch=lambda done, total: progress.info(
            "records", extra={"stage": "generate", "progress": (done, total, "records")}),
    )
    seconds = time.monotonic() - started
    if len(sample.records) < cfg.n:
        raise GenerationError(
            f"model {name} v{version} produced only {len(sample.records)} usable records of "
            f"{cfg.n} ({sample.parse_failures} did not parse); the model is undertrained: "
            "train longer or lower generate.temperature"
        )
    out = write_parquet(sample.records, Path(cfg.out))
    manifest = {
        "model": {"name": name, "version": version, "alias": alias, "run_id": mv.run_id},
        "privacy": {"epsilon": mv.tags.get("privacy.epsilon"),
                    "delta": mv.tags.get("privacy.delta"),
                    "accountant": mv.tags.get("privacy.accountant")},
        "seed": cfg.seed, "requested": cfg.n, "written": len(sample.records),
        "generated": sample.generated, "parse_failures": sample.parse_failures,
        "rejected": rejected, "columns": list(sample.records.columns),
        "sampling": {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p},
        "file": {"path": str(out), "sha256": file_digest(out)}, "seconds": round(seconds, 2),
    }
    manifest_path = write_json(manifest, out.with_suffix(".manifest.json"))
    tracking.log_params(run_id, {"model.name": name, "model.version": version,
                                 "model.alias": alias, "seed": cfg.seed, "n": cfg.n})
    tracking.log_metrics(run_id, {"generate.written": len(sample.records),
                                  "generate.parse_failures": sample.parse_failures,
                                  "generate.rejected_pii": rejected["pii"],
                                  "generate.records_per_s": len(sample.records) / seconds})
    tracking.log_artifact(run_id, manifest_path, "generation")
    create_markdown_artifact(key="generate-report", markdown=(
        f"# Generation\n\n- model: `{name}` v{version} (@{alias})\n- ε: "
        f"{manifest['privacy']['epsilon']}, δ: {manifest['privacy']['delta']}\n"
        f"- written: {len(sample.records)} of {cfg.n} requested; parse failures: "
        f"{sample.parse_failures}; rejected for PII: {rejected['pii']}\n- file: `{out}`\n"))
    logger.info("wrote %d records to %s", len(sample.records), out)
    return manifest
