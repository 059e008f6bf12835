"""`privgen run` and `privgen generate` for images (issue 14): which configs select the image
flow (cheap: read before any heavy import), its result in one screen, the folder written."""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml


def is_image_config(path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether the YAML file (or ``--set ingest.kind=images``) selects the image pipeline."""
    if any(o.replace(" ", "") == "ingest.kind=images" for o in overrides):
        return True
    if path is None or not Path(path).is_file():
        return False
    try:
        ingest = (yaml.safe_load(Path(path).read_text()) or {}).get("ingest") or {}
    except (yaml.YAMLError, AttributeError):
        return False  # load_config reports it
    return isinstance(ingest, dict) and ingest.get("kind") == "images"


def run_images(config: Path | None, overrides: list[str], preflight: bool, run_with_progress,
               out) -> None:
    """`privgen run` on an image config (``ingest.kind: images``)."""
    from flows.images import images_flow
    from flows.images_config import load_image_config

    cfg = load_image_config(config, overrides)
    from tasks.errors import InputError
    from tasks.images import DIGITS_SOURCE

    if cfg.ingest.path != DIGITS_SOURCE and not Path(cfg.ingest.path).exists():
        raise InputError(f"{cfg.ingest.path}: not found; set ingest.path to a folder of "
                         "PNG/JPEG files or an .npz file (or sklearn:digits, the demo)")
    started = time.monotonic()
    result = run_with_progress("image training flow", images_flow, cfg, preflight)
    rows = result["rows"]
    reasons = ", ".join(f"{k}: {v}" for k, v in rows["reasons"].items())
    line = (f"{rows['rows_in']} images in: {rows['rows_kept']} kept, "
            f"{rows['rows_quarantined']} quarantined" + (f" ({reasons}; list in "
                                                         f"{rows['quarantine_path']})"
                                                         if reasons else ""))
    if preflight:
        out.print(f"[green]plan ok[/]: {result['preflight']['summary']}; {line}")
        return
    m, t, e = result["model"], result["train"], result["eval"]
    metrics = e.get("utility") or {}
    shown = ", ".join(f"{k.removeprefix('eval.')} {metrics[k]:.3f}" for k in (
        "eval.tstr_accuracy", "eval.trtr_accuracy", "eval.frechet_distance",
        "eval.detection_auc") if k in metrics) or "not evaluated"
    out.print(
        f"[green]done[/] in {time.monotonic() - started:.0f} s: {line}; {t['family']} model, "
        f"ε={t['epsilon']:.2f} δ={t['delta']:.1e}; {shown}\n"
        f"model [bold]{m['name']}[/] version {m['version']}: "
        + ("[green]champion[/]" if m["promoted"] else
           "challenger only (" + "; ".join(v for v in m["verdicts"].values() if v != "pass")
           + ")")
        + f"\nMLflow run {result['run_id']} (sample grids under grids/); open the UI with: "
        f"mlflow ui --backend-store-uri {os.environ.get('MLFLOW_TRACKING_URI', 'mlruns')}")


def generated_line(manifest: dict) -> str:
    mdl = manifest["model"]
    return (f"[green]wrote[/] {manifest['written']} PNG images to {manifest['folder']} from "
            f"{mdl['name']} v{mdl['version']} (ε={manifest['privacy']['epsilon']}); "
            f"grid: {Path(manifest['folder']) / 'grid.png'}; manifest: "
            f"{Path(manifest['folder']) / 'manifest.json'}")
