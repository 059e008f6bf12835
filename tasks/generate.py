"""Generate: sample records from a registered model version in deterministic shards, check
them, and write one file plus a manifest saying which model and config made it.

Shard ``i`` always draws with the same seed and is written atomically with its checksum, so a
killed run started again generates only the missing shards and ends byte-identical to an
uninterrupted one. Every drawn record is accounted for: written, or rejected with a reason
(unparseable, PII, copied training text, outside the data contract)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from models import base
from tasks import release, tracking
from tasks.contract import ColumnSpec
from tasks.draw import (  # noqa: F401  (advice, has_pii, Shard, shard_plan: this stage's API)
    SAMPLING,
    SHARD_SIZE,
    Shard,
    advice,
    check_condition,
    draw_records,
    has_pii,
    set_sampling,
    shard_plan,
    short,
)
from tasks.errors import RegistryError
from tasks.release import violation  # noqa: F401  (re-exported for the release tests)
from tasks.storage import (
    file_digest,
    output_format,
    write_json,
    write_jsonl,
    write_records,
)


class GenerateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "privgen-demo@champion"
    n: int = Field(default=1000, ge=1, le=10_000_000)
    seed: int = 7
    # Sampling settings (text families), shared with the pyfunc's predict (tasks.draw).
    temperature: float = Field(default=SAMPLING["temperature"], gt=0.0)
    top_k: int = Field(default=SAMPLING["top_k"], ge=0)
    top_p: float = Field(default=SAMPLING["top_p"], gt=0.0, le=1.0)
    batch_size: int = Field(default=SAMPLING["batch_size"], ge=1)
    # Records per shard: the unit of resumption and of parallel work.
    shard_size: int = Field(default=SHARD_SIZE, ge=1)
    # Shards generated at once; each uses the torch threads it gets.
    workers: int = Field(default=1, ge=1)
    # "thread": a Prefect thread pool in this process; "dask": a local Dask cluster of
    # ``workers`` processes (prefect-dask), or the scheduler at ``dask_address``.
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = None
    # The file's suffix picks the format: .parquet, .csv or .jsonl.
    out: Path = Path("outputs/synthetic.parquet")
    # Structured fields every record holds, e.g. {"product": "Nimbus Phone"}: the other fields
    # are sampled given its value (text families: written into the line as the codec spells it).
    condition: dict[str, str] = Field(default_factory=dict)

    def digest(self) -> str:
        """A stable hash of the effective config, recorded with every batch."""
        return _digest(self.model_dump(mode="json"))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


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


def draw(model, n: int, seed: int, cfg: GenerateConfig, specs: list[ColumnSpec]):
    """``draw_records`` with ``cfg``'s sampling settings and condition; ``model``: a generator
    or the pyfunc wrapper around one (the evaluate stage's call until it loads with
    ``models.base.load``)."""
    gen = model if isinstance(model, base.Generator) else model.generator
    set_sampling(gen, cfg.model_dump(include=set(SAMPLING)))
    return draw_records(gen, n, seed, specs, cfg.condition)


@lru_cache(maxsize=2)
def _load(name: str, version: str):
    """The registered version's pyfunc wrapper (``.generator``: ``models.base.load`` of its
    model folder; ``.specs``: its release rules). One copy per process and version, shared by
    the shard tasks running in its threads."""
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()


def shard_dir(out: Path) -> Path:
    return Path(out).parent / f".{Path(out).name}.shards"


def shard_key(model: dict, cfg: GenerateConfig) -> str:
    """What a shard's records depend on besides its seed and size: a shard on disk made under
    another key (another model version, temperature, condition, …) is made again."""
    return _digest({"model": [model["name"], model["version"]], "contract": model["contract"],
                    **cfg.model_dump(mode="json", include={"temperature", "top_k", "top_p",
                                                           "batch_size", "condition"})})


def _shard_done(directory: Path, shard: Shard, key: str) -> dict | None:
    meta = directory / f"shard-{shard.index:05d}.json"
    if not meta.exists():
        return None
    done = json.loads(meta.read_text())
    if (done.get("key"), done.get("seed"), done.get("records")) != (key, shard.seed, shard.n):
        return None
    files = [(done["file"], done["sha256"])] + ([(done["quarantine"]["file"],
                                                  done["quarantine"]["sha256"])]
                                                if done.get("quarantine") else [])
    for name, digest in files:
        if not (directory / name).exists() or file_digest(directory / name) != digest:
            return None
    return done


def generate_shard(model: dict, shard: Shard, cfg: GenerateConfig, directory: Path) -> dict:
    """Sample, check and write one shard; a finished shard on disk is reused as it is."""
    key = shard_key(model, cfg)
    done = _shard_done(directory, shard, key)
    if done:
        return done | {"reused": True}
    gen = _load(model["name"], model["version"]).generator
    specs = [ColumnSpec.model_validate(s) for s in model["contract"] or []]
    drawn = draw(gen, shard.n, shard.seed, cfg, specs)
    short(drawn, shard.n, f"shard {shard.index} of model {model['name']} v{model['version']}")
    stem = f"{shard.index:05d}"
    quarantine = None
    if drawn.quarantine:
        path = write_jsonl(drawn.quarantine, directory / f"quarantine-{stem}.jsonl")
        quarantine = {"file": path.name, "sha256": file_digest(path),
                      "records": len(drawn.quarantine)}
    data = write_records(gen.frame(drawn.records), directory / f"shard-{stem}.parquet",
                         "parquet")
    done = {"index": shard.index, "seed": shard.seed, "key": key, "records": shard.n,
            "generated": drawn.generated, "rejected": dict(sorted(drawn.rejected.items())),
            "surplus": drawn.surplus, "quarantine": quarantine, "file": data.name,
            "sha256": file_digest(data)}
    write_json(done, directory / f"shard-{stem}.json")  # written last: the commit
    return done | {"reused": False}


@task(name="resolve-model", cache_policy=NO_CACHE)
def resolve_task(ref: str, condition: dict[str, str]) -> dict:
    """Pin the version, read its privacy tags and its training run's contract, and refuse a
    condition it cannot honour, all before any sampling."""
    logger = get_run_logger()
    name, version, alias = resolve(ref)
    mv = tracking.client().get_model_version(name, version)
    loaded = _load(name, version)
    specs, gen = loaded.specs, loaded.generator
    source = "model"
    if specs is None and gen.family in base.IMAGE_FAMILIES:
        source = "model"  # images: the declared labels are the spec's own values
    elif specs is None:  # a model saved before it carried its release rules
        source = "run"
        try:
            specs = release.from_run_config(tracking.download_json(mv.run_id, "config.json"),
                                            gen.spec.names)
        except (mlflow.exceptions.MlflowException, OSError, KeyError, ValueError) as exc:
            # An older or foreign training run: said in the log and the manifest, not silently.
            logger.warning("records not checked against a data contract: the training run "
                           "%s has no usable config.json (%s)", mv.run_id, type(exc).__name__)
            specs = None
    check_condition(condition, gen, specs or [])
    return {"name": name, "version": version, "alias": alias, "run_id": mv.run_id,
            "epsilon": mv.tags.get("privacy.epsilon"), "delta": mv.tags.get("privacy.delta"),
            "accountant": mv.tags.get("privacy.accountant"),
            "contract": None if specs is None else [s.model_dump(mode="json") for s in specs],
            "contract_source": source, "family": gen.family}


@task(name="generate-shard", cache_policy=NO_CACHE, task_run_name="shard-{shard.index}")
def shard_task(model: dict, shard: Shard, cfg: GenerateConfig, directory: str) -> dict:
    return generate_shard(model, shard, cfg, Path(directory))


def manifest_of(model: dict, shards: list[dict], cfg: GenerateConfig, written: int,
                columns: list[str]) -> dict:
    """Which model and config made the file, and where every drawn record went:
    generated = written + rejected (by reason) + surplus."""
    rejected: Counter = Counter()
    for d in shards:
        rejected.update(d["rejected"])
    return {
        "model": {k: model[k] for k in ("name", "version", "alias", "run_id")},
        "privacy": {k: model[k] for k in ("epsilon", "delta", "accountant")},
        "config": cfg.model_dump(mode="json"), "config_hash": cfg.digest(),
        "seed": cfg.seed, "condition": cfg.condition, "requested": cfg.n, "written": written,
        "generated": sum(d["generated"] for d in shards),
        "rejected": dict(sorted(rejected.items())),
        "parse_failures": sum(v for k, v in rejected.items() if k.startswith("parse:")),
        "quarantined": sum(d["quarantine"]["records"] for d in shards if d["quarantine"]),
        "surplus": sum(d["surplus"] for d in shards),
        "contract": None if model["contract"] is None else {
            "source": f"runs:/{model['run_id']}/config.json" if model.get(
                "contract_source") == "run" else "the model's release.json",
            "columns": [s["name"] for s in model["contract"]]},
        "columns": columns,
        "sampling": {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p},
        "shards": [{k: d[k] for k in ("index", "seed", "records", "sha256")} for d in shards],
    }


@task(name="assemble", cache_policy=NO_CACHE)
def assemble_task(model: dict, shards: list[dict], cfg: GenerateConfig, directory: str,
                  seconds: float, run_id: str) -> dict:
    """Concatenate the shards in order into the output file, gather their quarantined lines
    beside it, and write the manifest."""
    fmt = output_format(cfg.out)
    ordered = sorted(shards, key=lambda d: d["index"])
    records = pd.concat([pd.read_parquet(Path(directory) / d["file"]) for d in ordered],
                        ignore_index=True)
    out = write_records(records, Path(cfg.out), fmt)
    manifest = manifest_of(model, ordered, cfg, len(records), list(records.columns))
    manifest["file"] = {"path": str(out), "sha256": file_digest(out)}
    if manifest["quarantined"]:
        lines = [json.loads(line) for d in ordered if d["quarantine"] for line in
                 (Path(directory) / d["quarantine"]["file"]).read_text().splitlines()]
        path = write_jsonl(lines, Path(cfg.out).with_suffix(".quarantine.jsonl"))
        manifest["quarantine_file"] = {"path": str(path), "sha256": file_digest(path)}
    manifest_path = write_json(manifest, Path(cfg.out).with_suffix(".manifest.json"))
    tracking.log_params(run_id, {
        "model.name": model["name"], "model.version": model["version"],
        "model.alias": model["alias"], "privacy.epsilon": model["epsilon"],
        "privacy.delta": model["delta"], "seed": cfg.seed, "n": cfg.n,
        "shards": len(ordered), "format": fmt, "contract.checked": model["contract"] is not None,
        **{f"condition.{k}": v for k, v in cfg.condition.items()}})
    tracking.log_metrics(run_id, {
        "generate.written": len(records), "generate.generated": manifest["generated"],
        "generate.parse_failures": manifest["parse_failures"],
        "generate.quarantined": manifest["quarantined"], "generate.surplus": manifest["surplus"],
        **{f"generate.rejected.{k.replace(':', '.')}": v
           for k, v in manifest["rejected"].items()},
        "generate.records_per_s": len(records) / max(seconds, 1e-9)})
    tracking.log_artifact(run_id, manifest_path, "generation")
    rejected = ", ".join(f"{k}: {v}" for k, v in manifest["rejected"].items()) or "none"
    create_markdown_artifact(key="generate-report", markdown=(
        f"# Generation\n\n- model: `{model['name']}` v{model['version']} (@{model['alias']})\n"
        f"- ε: {model['epsilon']}, δ: {model['delta']}\n- config hash: "
        f"`{manifest['config_hash']}`\n- written: {len(records)} of {cfg.n} in {len(ordered)} "
        f"shards from {manifest['generated']} drawn; rejected: {rejected}; quarantined: "
        f"{manifest['quarantined']}\n- file: `{out}` ({fmt})\n"))
    get_run_logger().info("wrote %d records to %s", len(records), out)
    return manifest | {"seconds": round(seconds, 2)}
