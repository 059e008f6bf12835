"""Issue 15's erasure acceptance on a small table: train, generate, `privgen erase --subject` with
a demo customer id, train again; the affected version and batch are listed, the next run
quarantines the customer's rows with reason `erased`, and the raw id is nowhere in the MLflow
store, Prefect's database or the logs."""

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flows.config import load_config
from flows.generation import generation_flow
from flows.training import training_flow
from tasks import erasure, tracking
from tasks.anonymize import keyed_pseudonym, load_key
from tasks.generate import GenerateConfig

pytestmark = pytest.mark.slow
MODEL = "privgen-erasure-e2e"
SUBJECT = "C-77007"  # three tickets among the demo's first 300


def _config(root: Path, subset: Path) -> Path:
    """The cheapest family (MST) on the demo's structured columns, no audit: the lineage is
    under test here, not the model."""
    path = root / "erasure.yaml"
    path.write_text(yaml.safe_dump({
        "contract": {"extra_columns": "ignore", "columns": [
            {"name": "ticket_id", "role": "id", "unique": True, "regex": r"^T-\d{6}$"},
            {"name": "customer_id", "role": "id", "regex": r"^C-\d{5}$"},
            {"name": "channel", "role": "category",
             "allowed": ["email", "phone", "chat", "web_form", "social"]},
            {"name": "rating", "dtype": "integer", "role": "numeric", "min": 1, "max": 5}]},
        "anonymize": {"subject_column": "customer_id", "key_file": None},
        "train": {"family": "mst"}, "audit": {"enabled": False},
        "ingest": {"path": str(subset)}, "workdir": str(root / "runs"),
        "experiment": "privgen-erasure-e2e", "register": {"model_name": MODEL}}))
    return path


@pytest.fixture(scope="module")
def erased(prefect_api, tmp_path_factory, demo_csv, capture_logs):
    from flows.cli import app

    root = tmp_path_factory.mktemp("erasure")
    subset = root / "tickets.csv"
    subset.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:301]))
    assert subset.read_text().count(SUBJECT) == 3
    config = _config(root, subset)
    cfg = load_config(config)
    with capture_logs() as logs:
        first = training_flow(cfg)
        out = root / "out" / "synthetic.csv"
        generation_flow(GenerateConfig(model=f"{MODEL}/{first['model']['version']}", n=10,
                                       out=out))
        res = CliRunner().invoke(app, ["erase", "--subject", "--config", str(config), "--json"],
                                 input=f"{SUBJECT}\n")
        assert res.exit_code == 0, res.exception
        second = training_flow(cfg)
    yield {"root": root, "cfg": cfg, "first": first, "second": second, "out": out,
           "answer": json.loads(res.stdout), "logs": logs,
           "prefect_db": Path(prefect_api)}
    # The request would suppress the customer in every later flow test of this session.
    client = tracking.client()
    for run in client.search_runs(
            [client.get_experiment_by_name(erasure.EXPERIMENT).experiment_id]):
        client.delete_run(run.info.run_id)
    assert erasure.requests() == []


def test_erase_lists_the_affected_version_and_batch_and_tags_it(erased):
    answer, first = erased["answer"], erased["first"]
    version = f"{MODEL}/{first['model']['version']}"
    # Earlier flow tests of the session trained on the same demo rows: they are affected too.
    assert _own(erased, answer["runs"]) == [first["run_id"]]
    assert [v for v in answer["versions"] if v.startswith(f"{MODEL}/")] == [version]
    assert [b["file"] for b in answer["batches"]
            if b["file"] and b["file"].startswith(str(erased["root"]))] == [str(erased["out"])]
    client = tracking.client()
    tags = client.get_model_version(MODEL, first["model"]["version"]).tags
    assert tags[erasure.PENDING] == answer["request"]
    sheet = tracking.download_json(first["run_id"], "datasheet/datasheet.json")
    assert sheet["erasure"] == {"state": "pending", "requests": [answer["request"]]}
    assert client.get_model_version(MODEL, erased["second"]["model"]["version"]).tags.get(
        erasure.PENDING) is None


def test_the_next_run_quarantines_the_subjects_rows_as_erased(erased):
    rows = erased["second"]["rows"]
    quarantine = pd.read_parquet(rows["quarantine_path"])
    gone = quarantine[quarantine["_reason"] == "erased"]
    assert len(gone) == 3
    assert rows["rows_in"] == rows["rows_kept"] + rows["rows_quarantined"]
    assert rows["rows_erased"] == 3  # the run summary counts them apart from faulty rows
    # The run's subject record no longer holds the customer; the first run's still does.
    key = load_key(None)
    pseudonym = keyed_pseudonym(key, "customer_id")(SUBJECT)
    assert _own(erased, erasure.find({key.key_id: pseudonym}).runs) == [
        erased["first"]["run_id"]]


def _own(erased, runs: list[str]) -> list[str]:
    """``runs`` that belong to this test's experiment, in their order."""
    client = tracking.client()
    experiment = client.get_experiment_by_name(erased["cfg"].experiment).experiment_id
    mine = {r.info.run_id for r in client.search_runs([experiment])}
    return [r for r in runs if r in mine]


def _files(place: Path):
    for path in ([place] if place.is_file() else place.rglob("*")):
        if path.is_file():
            text = pd.read_parquet(path).to_csv() if path.suffix == ".parquet" else \
                path.read_bytes().decode("utf-8", "ignore")
            yield path, text


def test_the_raw_id_is_nowhere_in_mlflow_prefect_or_the_logs(erased, session_dir):
    pseudonym = keyed_pseudonym(load_key(None), "customer_id")(SUBJECT)
    client = tracking.client()
    stores = [session_dir / "mlflow.db", erased["prefect_db"], session_dir / "prefect",
              *{Path(e.artifact_location.removeprefix("file://"))
                for e in client.search_experiments()},
              # the second run's copies of the input: the erased rows are blanked there too
              Path(erased["second"]["rows"]["quarantine_path"]).parent]
    scanned = 0
    for place in stores:
        for path, text in _files(place):
            assert SUBJECT not in text, f"raw subject id in {path}"
            if "erasure/request.json" not in path.as_posix():
                # The keyed pseudonym lives only in the request's artifact (and, inside the
                # Bloom filter, unlisted): never in tags, params, Prefect or logs.
                assert pseudonym not in text, f"pseudonym in {path}"
            scanned += 1
    assert scanned > 20
    logs = "\n".join(erased["logs"])
    assert erased["logs"] and SUBJECT not in logs and pseudonym not in logs
    assert os.environ["PRIVGEN_PSEUDONYM_KEY"] not in logs


def test_prefect_holds_a_markdown_report_of_the_request(erased):
    from prefect import get_client

    async def artifacts():
        async with get_client() as c:
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

            return await c.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["erasure-request"])))

    import asyncio

    found = asyncio.run(artifacts())
    assert any(erased["answer"]["request"] in (a.data or "") for a in found)
    assert mlflow.get_experiment_by_name(erasure.EXPERIMENT) is not None


def test_key_list_names_what_each_key_links(erased):
    from flows.cli import app

    res = CliRunner().invoke(app, ["key", "list", "--json"])
    assert res.exit_code == 0, res.exception
    current = next(k for k in json.loads(res.stdout)["keys"] if k["state"] == "current")
    assert current["key_id"] == load_key(None).key_id
    ours = [v for v in current["versions"] if v.startswith(f"{MODEL}/")]
    assert ours == [f"{MODEL}/{erased[r]['model']['version']}" for r in ("first", "second")]
    assert str(erased["out"]) in current["batches"]
