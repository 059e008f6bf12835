"""Ingest and validate an image dataset (issue 14): a folder of PNG/JPEG files with an optional
labels CSV (``file,label``), or an NPZ of arrays (``images``, optional ``labels``), into the
canonical NPZ of /work/notes/images_contract.md.

Images in = images kept + images quarantined, always; each quarantined image is listed by file
name (or ``row <i>``) with its reason. A file that does not decode is a reason, never a
traceback. Reports and logs carry names, counts and shapes only, never pixels.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models import images as imgs
from tasks import tracking
from tasks.errors import ConfigError, InputError, ValidationFailed
from tasks.storage import atomic_write, write_json

SUFFIXES = (".png", ".jpg", ".jpeg")
DIGITS_SOURCE = "sklearn:digits"  # the demo: scikit-learn's 8×8 digits, exported to PNGs


class ImageIngestConfig(BaseModel):
    """Where the images are and what a valid one looks like."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Selects the image pipeline (flows/images.py) in `privgen run`.
    kind: Literal["images"] = "images"
    # A folder of .png/.jpg/.jpeg files, an .npz file, or "sklearn:digits" (the demo, written
    # as PNGs + labels.csv into the run folder: no download, nothing committed).
    path: str = DIGITS_SOURCE
    # For a folder: a CSV with columns file,label; relative to the folder. None: unlabelled,
    # unless the folder holds a labels.csv.
    labels_file: str | None = None
    # (height, width) every image must have. None: the most common size among the decodable
    # images, and the others are quarantined (the report says which size was taken).
    size: tuple[int, int] | None = None
    # 1 grey or 3 RGB. None: the most common channel count, as for size.
    channels: Literal[1, 3] | None = None
    # The label values the data owner declares public (e.g. "0".."9"): the only ones the model
    # may learn and emit. Labels in the data must be declared; an image with another label is
    # quarantined.
    labels: tuple[str, ...] | None = None
    # The contract's statement that the images were cleared for this use, or show no person:
    # images are not anonymized (issue 14), so training refuses to start without it.
    images_cleared: bool = False
    # A flood of bad images means the wrong folder or a broken export.
    max_quarantine_rate: float = Field(default=0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _cleared(self) -> ImageIngestConfig:
        if not self.images_cleared:
            raise ValueError("images are not anonymized: set ingest.images_cleared: true to "
                             "state that the images were cleared for this use or show no "
                             "person (the datasheet records the statement)")
        return self


@dataclass
class Candidate:
    """One input image before validation: its id, pixels (None if undecodable) and label."""

    id: str
    image: np.ndarray | None
    label: str | None = None
    reason: str | None = None  # why it cannot even be checked (not decodable, no label)


@dataclass
class ImageReport:
    images_in: int
    images_kept: int
    images_quarantined: int
    shape: tuple[int, int, int]
    size_source: str
    reasons: dict[str, int] = field(default_factory=dict)
    quarantined: list[dict] = field(default_factory=list)  # {"id", "reason"}
    labels: dict[str, int] = field(default_factory=dict)


# -- reading ---------------------------------------------------------------------------------
def export_digits(out: Path) -> Path:
    """scikit-learn's 8×8 handwritten digits (1,797, ships with the package: no download) as
    ``out``/digit-NNNN.png (grey, 0..16 scaled to 0..255) and ``out``/labels.csv."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    out.mkdir(parents=True, exist_ok=True)
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)[:, :, :, None]
    rows = []
    for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        name = f"digit-{i:04d}.png"
        (out / name).write_bytes(imgs.png_bytes(image))
        rows.append((name, str(label)))
    with open(out / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "label"), *rows])
    return out


def read_labels(path: Path) -> dict[str, str]:
    """file name → label from a CSV with a header ``file,label``. InputError naming the file
    and what is wrong otherwise."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"file", "label"} <= set(reader.fieldnames or ()):
                raise InputError(f"{path}: a labels file needs the columns file,label (found "
                                 f"{', '.join(reader.fieldnames or ()) or 'none'})")
            return {row["file"].strip(): (row["label"] or "").strip() for row in reader}
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the labels file ({exc})") from None


def read_folder(folder: Path, labels_file: str | None = None) -> list[Candidate]:
    """Every .png/.jpg/.jpeg file in ``folder`` (not recursive, sorted by name), decoded."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise InputError(f"{folder}: no .png, .jpg or .jpeg files; point ingest.path at the "
                         "folder of images")
    labels_path = folder / (labels_file or "labels.csv")
    if labels_file is not None and not labels_path.is_file():
        raise InputError(f"{labels_path}: labels file not found; check ingest.labels_file")
    labels = read_labels(labels_path) if labels_path.is_file() else None
    out = []
    for p in files:
        try:
            image, reason = imgs.from_png(p.read_bytes()), None
        except ValueError:
            image, reason = None, "not a decodable PNG/JPEG"
        label = None if labels is None else labels.get(p.name)
        if labels is not None and label is None and reason is None:
            reason = f"no label in {labels_path.name}"
        out.append(Candidate(p.name, image, label, reason))
    return out


def read_npz(path: Path) -> list[Candidate]:
    """Rows of an NPZ with ``images`` [N, H, W] or [N, H, W, C] (uint8 0..255, other integers
    in 0..255, or floats in [0, 1], scaled) and optional ``labels`` [N]."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data:
                raise InputError(f"{path}: no 'images' array (found {', '.join(data.files)})")
            images, labels = data["images"], data.get("labels")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable NPZ of arrays ({exc})") from None
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise InputError(f"{path}: 'images' must be [N, H, W] or [N, H, W, C], got "
                         f"{images.shape}")
    if labels is not None and len(labels) != len(images):
        raise InputError(f"{path}: {len(labels)} labels for {len(images)} images")
    out = []
    for i, image in enumerate(images):
        pixels, reason = _to_uint8(image)
        out.append(Candidate(f"row {i}", pixels, None if labels is None else str(labels[i]),
                             reason))
    return out


def _to_uint8(image: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    if image.dtype == np.uint8:
        return image, None
    if np.issubdtype(image.dtype, np.integer):
        if image.min() < 0 or image.max() > 255:
            return None, f"values {image.min()}..{image.max()}, outside 0..255"
        return image.astype(np.uint8), None
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            return None, "values not finite (NaN or infinity)"
        if image.min() < 0 or image.max() > 1:
            return None, (f"float values {image.min():.3g}..{image.max():.3g}, outside "
                          "[0, 1]; store 8-bit integers or floats in [0, 1]")
        return np.rint(image * 255).astype(np.uint8), None
    return None, f"pixel type {image.dtype} (expected 8-bit integers or floats in [0, 1])"


def read_source(cfg: ImageIngestConfig, scratch: Path) -> tuple[str, list[Candidate]]:
    """(the source as named in reports, its candidates). The demo is exported into
    ``scratch`` first. InputError for a missing or unreadable source."""
    if cfg.path == DIGITS_SOURCE:
        folder = export_digits(scratch / "digits")
        return DIGITS_SOURCE, read_folder(folder)
    path = Path(cfg.path)
    if path.is_dir():
        return str(path), read_folder(path, cfg.labels_file)
    if path.is_file() and path.suffix.lower() == ".npz":
        return str(path), read_npz(path)
    if not path.exists():
        raise InputError(f"{path}: not found; set ingest.path to a folder of PNG/JPEG files or "
                         "an .npz file")
    raise InputError(f"{path}: not a folder or an .npz file; point ingest.path at the folder "
                     "of images or an NPZ of arrays")


# -- validation ------------------------------------------------------------------------------
def validate(candidates: list[Candidate], cfg: ImageIngestConfig
             ) -> tuple[np.ndarray, list[str], list[str] | None, ImageReport]:
    """(images [K, H, W, C] uint8, ids [K], labels [K] or None, report): the candidates that
    decode, have the expected size and channels and a declared label; the others
    quarantined with a reason each. ConfigError when labels are present but not declared;
    ValidationFailed when more than ``max_quarantine_rate`` are quarantined or none is left."""
    labelled = any(c.label is not None for c in candidates)
    if labelled and cfg.labels is None:
        raise ConfigError("the images carry labels but ingest.labels declares none: list the "
                          "label values that may be released (e.g. labels: ['0', '1', ...]); "
                          "privgen never releases a label set it was not given")
    decoded = [c for c in candidates if c.image is not None]
    size, size_source = cfg.size, "declared (ingest.size)"
    if size is None:
        size = _commonest([c.image.shape[:2] for c in decoded]) or (0, 0)
        size_source = "the most common size (ingest.size not set)"
    channels = cfg.channels or _commonest([c.image.shape[2] for c in decoded]) or 1
    kept, quarantined = [], []
    for c in candidates:
        reason = c.reason or _problem(c, tuple(size), channels, cfg.labels)
        (quarantined if reason else kept).append((c, reason))
    report = ImageReport(
        images_in=len(candidates), images_kept=len(kept), images_quarantined=len(quarantined),
        shape=(int(size[0]), int(size[1]), int(channels)), size_source=size_source,
        reasons=dict(Counter(_kind(r) for _, r in quarantined).most_common()),
        quarantined=[{"id": c.id, "reason": r} for c, r in quarantined],
        labels=dict(sorted(Counter(c.label for c, _ in kept if c.label is not None).items())))
    assert report.images_in == report.images_kept + report.images_quarantined
    if not kept:
        raise ValidationFailed(f"no usable image of {len(candidates)}; commonest reason: "
                               f"{next(iter(report.reasons), 'none')}")
    if len(quarantined) > cfg.max_quarantine_rate * len(candidates):
        raise ValidationFailed(
            f"{len(quarantined)} of {len(candidates)} images quarantined, over "
            f"ingest.max_quarantine_rate={cfg.max_quarantine_rate:g} (reasons: "
            + ", ".join(f"{k}: {v}" for k, v in report.reasons.items())
            + "); check the folder, or raise the rate if the failures are expected")
    images = np.stack([c.image for c, _ in kept])
    labels = [c.label for c, _ in kept] if labelled else None
    return images, [c.id for c, _ in kept], labels, report


def _problem(c: Candidate, size: tuple[int, int], channels: int,
             declared: tuple[str, ...] | None) -> str | None:
    h, w, ch = c.image.shape
    if (h, w) != size:
        return f"size {w}x{h}, expected {size[1]}x{size[0]}"
    if ch != channels:
        return f"{ch} channels, expected {channels}"
    if declared is not None and c.label is not None and c.label not in declared:
        return f"label {c.label!r} not declared in ingest.labels"
    return None


def _kind(reason: str) -> str:
    """A reason without its specifics, for counting ("size 9x8, expected 8x8" → "size")."""
    return reason.split(" ", 1)[0] if reason.startswith(("size", "label", "values")) else reason


def _commonest(values: list) -> object | None:
    return Counter(values).most_common(1)[0][0] if values else None


# -- the canonical dataset -------------------------------------------------------------------
def dataset_digest(images: np.ndarray, labels: list[str] | None) -> str:
    """SHA-256 over the pixel bytes, the shape and the labels, not the ids: renaming the files
    leaves it unchanged; reordering them does not."""
    h = hashlib.sha256()
    h.update(repr(tuple(images.shape)).encode())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    if labels is not None:
        h.update("\x1f".join(labels).encode())
    return h.hexdigest()


def write_canonical(path: Path, images: np.ndarray, ids: list[str],
                    labels: list[str] | None) -> Path:
    """The canonical NPZ (``images`` uint8 [N, H, W, C], ``ids``, optional ``labels``),
    written atomically."""
    arrays = {"images": images, "ids": np.asarray(ids, dtype=str)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=str)

    def write(tmp: Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        tmp.write_bytes(buf.getvalue())

    return atomic_write(path, write)


def load_canonical(path: str | Path):
    """The canonical NPZ as the families' frame (``image``, optional ``label``)."""
    with np.load(path, allow_pickle=False) as data:
        labels = list(data["labels"]) if "labels" in data else None
        return imgs.to_frame(data["images"], labels)


def ingest_images(cfg: ImageIngestConfig, out_dir: Path) -> dict:
    """Read, validate and write the canonical NPZ and the quarantine list into ``out_dir``;
    a JSON-able result (paths, digest, counts, shape, labels: no pixels)."""
    source, candidates = read_source(cfg, out_dir / "source")
    images, ids, labels, report = validate(candidates, cfg)
    canonical = write_canonical(out_dir / "images.npz", images, ids, labels)
    quarantine = write_json(report.quarantined, out_dir / "quarantine.json")
    return {"source": source, "canonical_path": str(canonical),
            "quarantine_path": str(quarantine), "digest": dataset_digest(images, labels),
            "rows_in": report.images_in, "rows_kept": report.images_kept,
            "rows_quarantined": report.images_quarantined, "shape": list(report.shape),
            "size_source": report.size_source, "reasons": report.reasons,
            "labels": report.labels}


@task(name="ingest-images", cache_policy=NO_CACHE)
def ingest_images_task(cfg: ImageIngestConfig, raw_dir: str, run_id: str) -> dict:
    """Ingest and validate into ``raw_dir`` (owner-only: the images are the private data);
    MLflow gets the digest, counts, shape and reasons, never a file name or a pixel."""
    result = ingest_images(cfg, Path(raw_dir))
    tracking.log_params(run_id, {"ingest.kind": "images", "ingest.source": result["source"],
                                 "ingest.shape": "x".join(map(str, result["shape"])),
                                 "ingest.size_source": result["size_source"]})
    tracking.log_metrics(run_id, {
        "validate.rows_in": result["rows_in"], "validate.rows_kept": result["rows_kept"],
        "validate.rows_quarantined": result["rows_quarantined"],
        **{f"validate.reason.{_metric(k)}": v for k, v in result["reasons"].items()}})
    tracking.set_tags(run_id, {"dataset.digest": result["digest"]})
    reasons = ", ".join(f"{k}: {v}" for k, v in result["reasons"].items()) or "none"
    create_markdown_artifact(key="validate-images-report", markdown=(
        f"# Images\n\n- source: `{result['source']}`\n- in: {result['rows_in']}, kept: "
        f"{result['rows_kept']}, quarantined: {result['rows_quarantined']} ({reasons})\n"
        f"- shape: {result['shape']} ({result['size_source']})\n- labels: "
        f"{len(result['labels'])} classes\n- digest: `{result['digest'][:16]}`\n"))
    get_run_logger().info("images: %d in, %d kept, %d quarantined (%s); list in %s",
                          result["rows_in"], result["rows_kept"], result["rows_quarantined"],
                          reasons, result["quarantine_path"])
    return result


def _metric(reason: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in reason).strip("_")
