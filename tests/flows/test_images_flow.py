"""Images end to end (issue 14) on 60 digits and one epoch: `privgen run` with
``ingest.kind: images`` → registry → `privgen generate` writes PNGs + manifest + grid, sharded
and resumable → the registered pyfunc returns the same images as base64 PNG."""

import base64
import csv
import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from flows.generation import generation_flow
from flows.images import images_flow
from flows.images_config import load_image_config
from models import images as imgs
from tasks.generate import GenerateConfig
from tasks.images import export_digits

pytestmark = pytest.mark.slow
DIGITS = [str(d) for d in range(10)]


def _tiny_digits(root):
    """The first 60 digits as a folder, plus one corrupt PNG the ingest must quarantine."""
    full = export_digits(root / "all")
    folder = root / "digits"
    folder.mkdir()
    rows = list(csv.reader((full / "labels.csv").open()))[1:61]
    for name, _ in rows:
        (folder / name).write_bytes((full / name).read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with open(folder / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("file", "label"), *rows, ("broken.png", "1")])
    return folder


@pytest.fixture(scope="module")
def image_run(prefect_api, tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    folder = _tiny_digits(root)
    cfg = load_image_config(None, [
        f"workdir={root / 'runs'}", f"ingest.path={folder}", "ingest.images_cleared=true",
        f"ingest.labels={json.dumps(DIGITS)}", "ingest.size=[8, 8]",
        "ingest.max_quarantine_rate=0.1", "register.model_name=img-flow",
        "train.convvae={epochs: 1, batch_size: 16, width: 8, latent_dim: 4, grid_every: 1}",
        "train.privacy.target_epsilon=8", "evaluate.synthetic_images=20", "evaluate.steps=5",
        "audit.control=false"])
    return root, images_flow(cfg)


def test_run_quarantines_trains_and_registers(image_run):
    _, result = image_run
    rows = result["rows"]
    assert (rows["rows_in"], rows["rows_kept"], rows["rows_quarantined"]) == (61, 60, 1)
    with open(rows["quarantine_path"]) as f:
        quarantined = json.load(f)
    assert quarantined == [{"id": "broken.png", "reason": "not a decodable PNG/JPEG"}]
    train = result["train"]
    assert train["family"] == "convvae" and train["private"] and 0 < train["epsilon"] <= 8
    client = mlflow.MlflowClient()
    mv = client.get_model_version("img-flow", result["model"]["version"])
    assert mv.tags["train.family"] == "convvae" and mv.tags["dataset.digest"] == rows["digest"]
    artifacts = {a.path for a in client.list_artifacts(result["run_id"], "grids")}
    assert "grids/epoch_001.png" in artifacts
    sheet = json.loads(mlflow.artifacts.load_text(
        f"runs:/{result['run_id']}/datasheet/datasheet.json"))
    assert "images_cleared" in sheet["anonymization"]["statement"]


def test_generate_writes_pngs_manifest_grid_and_resumes(image_run):
    root, result = image_run
    out = root / "generated"
    cfg = GenerateConfig(model=f"img-flow/{result['model']['version']}", n=12, seed=5,
                         shard_size=5, out=out)
    manifest = generation_flow(cfg)
    pngs = sorted(out.glob("0*.png"))
    assert manifest["written"] == len(pngs) == 12 and (out / "grid.png").is_file()
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["model"]["version"] == result["model"]["version"]
    assert on_disk["privacy"]["epsilon"] and len(on_disk["shards"]) == 3
    assert all(imgs.from_png(p.read_bytes()).shape == (8, 8, 1) for p in pngs)
    labels = dict(list(csv.reader((out / "labels.csv").open()))[1:])
    assert set(labels.values()) <= set(DIGITS)
    # A killed run started again: the finished shards are reused, the result byte-identical.
    before = {p.name: p.read_bytes() for p in pngs}
    shard_files = sorted((root / ".generated.shards").glob("shard-*.json"))
    shard_files[1].unlink()
    again = generation_flow(cfg)
    assert {p.name: p.read_bytes() for p in sorted(out.glob("0*.png"))} == before
    assert [f["sha256"] for f in again["files"]] == [f["sha256"] for f in manifest["files"]]

    # The pyfunc: the same request gives the same images, as base64 PNG beside the label.
    model = mlflow.pyfunc.load_model(f"models:/img-flow/{result['model']['version']}")
    served = model.predict(pd.DataFrame({"n": [12], "seed": [5]}), params={"shard_size": 5})
    assert list(served.columns) == ["image_png", "label"]
    decoded = [imgs.from_png(base64.b64decode(s)) for s in served["image_png"]]
    assert all(np.array_equal(d, imgs.from_png(before[p.name]))
               for d, p in zip(decoded, pngs, strict=True))
    assert list(served["label"]) == [labels[p.name] for p in pngs]
