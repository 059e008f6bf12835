"""Generate: sample records from a registered model version in deterministic shards, filter
them, and write one file plus a manifest saying which model made it.

Shard ``i`` always draws with the same seed and is written atomically with its checksum, so a
killed run started again generates only the missing shards and ends byte-identical to an
uninterrupted one."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks import pii, tracking
from tasks.errors import GenerationError, RegistryError
from tasks.storage import atomic_write, file_digest, write_json

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
    # Records per shard: the unit of resumption and of parallel work.
    shard_size: int = Field(default=1000, ge=1)
    # Shards generated at once; each uses the torch threads it gets.
    workers: int = Field(default=1, ge=1)
    # "thread": a Prefect thread pool in this process; "dask": a local Dask cluster of
    # ``workers`` processes (prefect-dask), or the scheduler at ``dask_address``.
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = None
    # The file's suffix picks the format: .parquet, .csv or .jsonl.
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


FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
# OWASP: a cell starting with one of these runs as a formula when a spreadsheet opens the CSV.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Shard:
    index: int
    n: int
    seed: int


def shard_plan(n: int, shard_size: int, seed: int) -> list[Shard]:
    """Deterministic shards: the same request always maps shard i to the same size and seed."""
    return [Shard(i, min(shard_size, n - start), seed * 1_000_003 + i)
            for i, start in enumerate(range(0, n, shard_size))]


def output_format(path: Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise GenerationError(f"{path}: unknown output format; use a .parquet, .csv or .jsonl "
                              "file name")
    return fmt


def neutralize_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """Prefix formula-like text cells with a quote so spreadsheets show them as text."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    return out


def write_records(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    if fmt == "csv":
        return atomic_write(path, lambda tmp: neutralize_formulas(df).to_csv(tmp, index=False))
    return atomic_write(path, lambda tmp: df.to_json(tmp, orient="records", lines=True))


def has_pii(row: dict) -> bool:
    return any(isinstance(v, str) and pii.pattern_spans(v) for v in row.values())


@lru_cache(maxsize=2)
def _load(name: str, version: str):
    # One copy per process and version, shared by the shard tasks running in its threads.
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()


def shard_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.shards"


def _shard_done(directory: Path, shard: Shard) -> dict | None:
    meta = directory / f"shard-{shard.index:05d}.json"
    if not meta.exists():
        return None
    done = json.loads(meta.read_text())
    data = directory / done["file"]
    if done.get("seed") != shard.seed or not data.exists() or file_digest(data) != done["sha256"]:
        return None
    return done


def generate_shard(name: str, version: str, shard: Shard, cfg: GenerateConfig,
                   directory: Path) -> dict:
    """Sample, filter and write one shard; a finished shard on disk is reused as it is."""
    done = _shard_done(directory, shard)
    if done:
        return done | {"reused": True}
    model = _load(name, version)
    rejected = {"pii": 0, "replay": 0}

    def keep(row: dict) -> bool:
        if has_pii(row):
            rejected["pii"] += 1
            return False
        if model.copies_training_text(row):
            rejected["replay"] += 1
            return False
        return True

    sample = model.sample(shard.n, shard.seed, temperature=cfg.temperature, top_k=cfg.top_k,
                          top_p=cfg.top_p, batch_size=cfg.batch_size, keep=keep)
    if len(sample.records) < shard.n:
        raise GenerationError(
            f"model {name} v{version} produced only {len(sample.records)} usable records of "
            f"{shard.n} in shard {shard.index} ({sample.parse_failures} did not parse, "
            f"{sum(rejected.values())} rejected); train longer or lower generate.temperature"
        )
    data = write_records(sample.records, directory / f"shard-{shard.index:05d}.parquet",
                         "parquet")
    done = {"index": shard.index, "seed": shard.seed, "records": len(sample.records),
            "generated": sample.generated, "parse_failures": sample.parse_failures,
            "rejected": rejected, "file": data.name, "sha256": file_digest(data)}
    write_json(done, directory / f"shard-{shard.index:05d}.json")  # written last: the commit
    return done | {"reused": False}


@task(name="resolve-model", cache_policy=NO_CACHE)
def resolve_task(ref: str) -> dict:
    name, version, alias = resolve(ref)
    mv = tracking.client().get_model_version(name, version)
    return {"name": name, "version": version, "alias": alias, "run_id": mv.run_id,
            "epsilon": mv.tags.get("privacy.epsilon"), "delta": mv.tags.get("privacy.delta"),
            "accountant": mv.tags.get("privacy.accountant")}


@task(name="generate-shard", cache_policy=NO_CACHE, task_run_name="shard-{shard.index}")
def shard_task(model: dict, shard: Shard, cfg: GenerateConfig, directory: str,
               total_shards: int) -> dict:
    done = generate_shard(model["name"], model["version"], shard, cfg, Path(directory))
    progress.info("shard", extra={"stage": "generate",
                                  "progress": (done["index"] + 1, total_shards, "shards")})
    return done


@task(name="assemble", cache_policy=NO_CACHE)
def assemble_task(model: dict, shards: list[dict], cfg: GenerateConfig, directory: str,
                  seconds: float, run_id: str) -> dict:
    """Concatenate the shards in order into the output file and write the manifest."""
    fmt = output_format(cfg.out)
    ordered = sorted(shards, key=lambda d: d["index"])
    records = pd.concat([pd.read_parquet(Path(directory) / d["file"]) for d in ordered],
                        ignore_index=True)
    out = write_records(records, Path(cfg.out), fmt)
    rejected = {k: sum(d["rejected"][k] for d in ordered) for k in ("pii", "replay")}
    manifest = {
        "model": {k: model[k] for k in ("name", "version", "alias", "run_id")},
        "privacy": {k: model[k] for k in ("epsilon", "delta", "accountant")},
        "seed": cfg.seed, "requested": cfg.n, "written": len(records),
        "generated": sum(d["generated"] for d in ordered),
        "parse_failures": sum(d["parse_failures"] for d in ordered), "rejected": rejected,
        "columns": list(records.columns), "format": fmt,
        "sampling": {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p},
        "shards": [{k: d[k] for k in ("index", "seed", "records", "sha256")} for d in ordered],
        "file": {"path": str(out), "sha256": file_digest(out)},
    }
    manifest_path = write_json(manifest, Path(cfg.out).with_suffix(".manifest.json"))
    tracking.log_params(run_id, {"model.name": model["name"], "model.version": model["version"],
                                 "model.alias": model["alias"], "seed": cfg.seed, "n": cfg.n,
                                 "shards": len(ordered), "format": fmt})
    tracking.log_metrics(run_id, {"generate.written": len(records),
                                  "generate.parse_failures": manifest["parse_failures"],
                                  "generate.rejected_pii": rejected["pii"],
                                  "generate.rejected_replay": rejected["replay"],
                                  "generate.records_per_s": len(records) / max(seconds, 1e-9)})
    tracking.log_artifact(run_id, manifest_path, "generation")
    create_markdown_artifact(key="generate-report", markdown=(
        f"# Generation\n\n- model: `{model['name']}` v{model['version']} (@{model['alias']})\n"
        f"- ε: {model['epsilon']}, δ: {model['delta']}\n- written: {len(records)} of {cfg.n} "
        f"in {len(ordered)} shards; parse failures: {manifest['parse_failures']}; rejected: "
        f"{rejected['pii']} for PII, {rejected['replay']} for copying training text\n"
        f"- file: `{out}` ({fmt})\n"))
    get_run_logger().info("wrote %d records to %s", len(records), out)
    return manifest | {"seconds": round(seconds, 2)}
