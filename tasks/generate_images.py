"""Generate images (issue 14): an image family's records drawn in the same deterministic,
resumable shards as ``tasks.generate`` (one NPZ per shard, written atomically with its
checksum), then written out as a folder of PNG files with ``labels.csv``, ``grid.png`` and
``manifest.json`` (model version, alias, ε, δ, seed, counts, a checksum per file).

The folder reads back through ``privgen run`` with ``ingest.kind: images`` as it is."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models import images as imgs
from tasks import tracking
from tasks.draw import Shard, short
from tasks.errors import GenerationError
from tasks.generate import GenerateConfig, _load, _shard_done, draw, shard_key
from tasks.images import write_canonical
from tasks.storage import atomic_write, file_digest, write_json

GRID_IMAGES = 100  # images shown in grid.png (per class rows when labelled)


def check_out(out: Path) -> None:
    """An image model writes a folder: refuse a file name before any sampling."""
    if Path(out).suffix:
        raise GenerationError(f"{out}: an image model writes a folder of PNG files; give "
                              "--out a folder name (e.g. --out digits/)")


def generate_image_shard(model: dict, shard: Shard, cfg: GenerateConfig, directory: Path
                         ) -> dict:
    """Draw and write one shard (NPZ: images, ids, labels); a finished one is reused."""
    key = shard_key(model, cfg)
    done = _shard_done(directory, shard, key)
    if done:
        return done | {"reused": True}
    gen = _load(model["name"], model["version"]).generator
    drawn = draw(gen, shard.n, shard.seed, cfg, [])
    short(drawn, shard.n, f"shard {shard.index} of model {model['name']} v{model['version']}")
    frame = gen.frame(drawn.records)
    labels = list(frame[imgs.LABEL].astype(str)) if imgs.LABEL in frame else None
    stem = f"{shard.index:05d}"
    data = write_canonical(directory / f"shard-{stem}.npz", imgs.to_array(frame),
                           [f"{shard.index}:{i}" for i in range(len(frame))], labels)
    done = {"index": shard.index, "seed": shard.seed, "key": key, "records": shard.n,
            "generated": drawn.generated, "rejected": dict(sorted(drawn.rejected.items())),
            "surplus": drawn.surplus, "quarantine": None, "file": data.name,
            "sha256": file_digest(data)}
    write_json(done, directory / f"shard-{stem}.json")  # written last: the commit
    return done | {"reused": False}


def write_folder(shards: list[dict], directory: Path, out: Path) -> tuple[list[dict], bytes]:
    """Every shard's images, in shard order, as ``out``/NNNNNN.png and ``labels.csv``;
    (one {file, label, sha256} per image, the grid PNG of the first ``GRID_IMAGES``)."""
    out.mkdir(parents=True, exist_ok=True)
    files, grid, grid_labels, labelled = [], [], [], False
    for d in sorted(shards, key=lambda s: s["index"]):
        with np.load(directory / d["file"], allow_pickle=False) as data:
            images = data["images"]
            labels = list(data["labels"]) if "labels" in data.files else [None] * len(images)
            labelled = labelled or "labels" in data.files
        for image, label in zip(images, labels, strict=True):
            name = f"{len(files):06d}.png"
            png = imgs.png_bytes(image)
            atomic_write(out / name, lambda tmp, png=png: tmp.write_bytes(png))
            files.append({"file": name, "label": label, "sha256": file_digest(out / name)})
            if len(grid) < GRID_IMAGES:
                grid.append(image)
                grid_labels.append(label)
    if labelled:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            [("file", "label"), *((f["file"], f["label"]) for f in files)])
        atomic_write(out / "labels.csv", lambda tmp: tmp.write_text(buf.getvalue()))
    png = imgs.grid_png(np.stack(grid), grid_labels if labelled else None)
    atomic_write(out / "grid.png", lambda tmp: tmp.write_bytes(png))
    return files, png


def image_manifest(model: dict, shards: list[dict], cfg: GenerateConfig,
                   files: list[dict], out: Path) -> dict:
    rejected: Counter = Counter()
    for d in shards:
        rejected.update(d["rejected"])
    labels = Counter(f["label"] for f in files if f["label"] is not None)
    return {
        "kind": "images", "folder": str(out),
        "model": {k: model[k] for k in ("name", "version", "alias", "run_id", "family")},
        "privacy": {k: model[k] for k in ("epsilon", "delta", "accountant")},
        "config": cfg.model_dump(mode="json"), "config_hash": cfg.digest(), "seed": cfg.seed,
        "condition": cfg.condition, "requested": cfg.n, "written": len(files),
        "generated": sum(d["generated"] for d in shards),
        "rejected": dict(sorted(rejected.items())),
        "surplus": sum(d["surplus"] for d in shards),
        "labels": dict(sorted(labels.items())),
        "shards": [{k: d[k] for k in ("index", "seed", "records", "sha256")}
                   for d in sorted(shards, key=lambda s: s["index"])],
        "grid": {"file": "grid.png", "sha256": file_digest(out / "grid.png")},
        "files": files,
    }


@task(name="generate-image-shard", cache_policy=NO_CACHE, task_run_name="shard-{shard.index}")
def image_shard_task(model: dict, shard: Shard, cfg: GenerateConfig, directory: str) -> dict:
    return generate_image_shard(model, shard, cfg, Path(directory))


@task(name="assemble-images", cache_policy=NO_CACHE)
def assemble_images_task(model: dict, shards: list[dict], cfg: GenerateConfig, directory: str,
                         seconds: float, run_id: str) -> dict:
    """The shards as a folder of PNGs with labels.csv, grid.png and manifest.json; the
    manifest and the grid logged to the generation run."""
    out = Path(cfg.out)
    files, _ = write_folder(shards, Path(directory), out)
    manifest = image_manifest(model, shards, cfg, files, out)
    path = write_json(manifest, out / "manifest.json")
    tracking.log_params(run_id, {
        "model.name": model["name"], "model.version": model["version"],
        "model.alias": model["alias"], "privacy.epsilon": model["epsilon"],
        "privacy.delta": model["delta"], "seed": cfg.seed, "n": cfg.n, "format": "png",
        "shards": len(shards), **{f"condition.{k}": v for k, v in cfg.condition.items()}})
    tracking.log_metrics(run_id, {
        "generate.written": len(files), "generate.generated": manifest["generated"],
        "generate.surplus": manifest["surplus"],
        **{f"generate.rejected.{k.replace(':', '.')}": v
           for k, v in manifest["rejected"].items()},
        "generate.records_per_s": len(files) / max(seconds, 1e-9)})
    tracking.log_artifact(run_id, path, "generation")
    tracking.log_artifact(run_id, out / "grid.png", "generation")
    create_markdown_artifact(key="generate-report", markdown=(
        f"# Generation (images)\n\n- model: `{model['name']}` v{model['version']} "
        f"(@{model['alias']})\n- ε: {model['epsilon']}, δ: {model['delta']}\n- written: "
        f"{len(files)} PNGs of {cfg.n} in {len(shards)} shards to `{out}`\n"))
    get_run_logger().info("wrote %d images to %s", len(files), out)
    return manifest | {"seconds": round(seconds, 2)}
