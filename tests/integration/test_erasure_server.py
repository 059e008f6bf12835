"""Erasure (issue 15) against the MLflow server on PostgreSQL, as in the compose stack: runs,
versions and a batch recorded as the flows record them; `privgen erase --subject` lists and tags
what holds the subject, ingest suppresses it from the server's request list, and neither the
database nor the artifact store holds the raw id."""

import contextlib
import json
import uuid

import mlflow
import pytest
from test_registry_server import PG, _admin, server_uri  # noqa: F401  (the server fixture)
from typer.testing import CliRunner

from tasks import subjects, tracking
from tasks.anonymize import AnonymizeConfig, keyed_pseudonym, load_key
from tasks.contract import ColumnSpec, DataContract, Role
from tasks.erasure import PENDING, ingest_suppressor
from tasks.ingest import IngestConfig, ingest

pytestmark = pytest.mark.integration
SUBJECT = "C-40404"
CONTRACT = DataContract(columns=(ColumnSpec(name="ticket_id", role=Role.ID),
                                 ColumnSpec(name="customer_id", role=Role.ID, regex=r"^C-\d{5}$"),
                                 ColumnSpec(name="product")))


@pytest.fixture
def on_server(server_uri, monkeypatch):  # noqa: F811
    # Through the environment, as an operator points privgen at a server: mlflow's
    # set_tracking_uri would pin a URI that outlives the test and overrides every later
    # test's MLFLOW_TRACKING_URI.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_uri)
    assert mlflow.get_tracking_uri() == server_uri, "a tracking URI was pinned before this test"
    yield server_uri


def _training_run(experiment: str, model: str, customers: list[str]) -> tuple[str, str]:
    """A training run as anonymize and register leave it: key id, subject filter, version."""
    key = load_key(None)
    run = tracking.start_run(experiment, "run", {"privgen.flow": "training"})
    tracking.set_tags(run, {"privgen.key_id": key.key_id})
    subjects.record(run, map(keyed_pseudonym(key, "customer_id"), customers), key.key_id,
                    "customer_id")
    tracking.log_text(run, "placeholder", "model/MLmodel")
    tracking.log_dict(run, {"model": {"name": model}}, "datasheet/datasheet.json")
    tracking.end_run(run)
    client = tracking.client()
    with contextlib.suppress(mlflow.exceptions.MlflowException):  # the second run's version
        client.create_registered_model(model)
    mv = client.create_model_version(model, source=f"runs:/{run}/model", run_id=run)
    return run, str(mv.version)


def test_erase_on_the_server_lists_tags_suppresses_and_stores_no_raw_id(on_server, tmp_path,
                                                                         tmp_path_factory):
    from flows.cli import app

    tag = uuid.uuid4().hex[:8]
    experiment, model = f"erasure-srv-{tag}", f"erasure-srv-{tag}"
    others = [f"C-{i:05d}" for i in range(100, 140)]
    hit, version = _training_run(experiment, model, [*others, SUBJECT])
    _, clean = _training_run(experiment, model, others)
    batch = tracking.start_run(experiment, "generate", {"privgen.flow": "generation",
                                                        "privgen.model_version":
                                                        f"{model}/{version}"})
    tracking.log_dict(batch, {"file": {"path": "/data/out/batch.csv", "sha256": "0"}},
                      "generation/batch.manifest.json")
    tracking.end_run(batch)

    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"contract": CONTRACT.model_dump(mode="json"),
                                  "anonymize": {"subject_column": "customer_id",
                                                "key_file": None}}))
    res = CliRunner().invoke(app, ["erase", "--subject", "-c", str(config), "--json"],
                             input=SUBJECT + "\n")
    assert res.exit_code == 0, res.exception
    answer = json.loads(res.stdout)
    assert hit in answer["runs"] and f"{model}/{version}" in answer["versions"]
    assert f"{model}/{clean}" not in answer["versions"]
    assert {"run_id": batch, "version": f"{model}/{version}", "file": "/data/out/batch.csv",
            "sha256": "0"} in answer["batches"]
    client = tracking.client()
    assert client.get_model_version(model, version).tags[PENDING] == answer["request"]
    assert PENDING not in client.get_model_version(model, clean).tags

    src = tmp_path / "t.csv"
    src.write_text(f"ticket_id,customer_id,product\nT-1,{SUBJECT},Router\nT-2,C-00100,Phone\n")
    erased = ingest_suppressor(CONTRACT, AnonymizeConfig(subject_column="customer_id",
                                                         key_file=None))
    assert ingest(IngestConfig(path=src), tmp_path / "raw", erased).rows_erased == 1

    _assert_not_in_database(experiment, SUBJECT)
    for root in tmp_path_factory.getbasetemp().glob("mlflow-server*/artifacts"):
        for path in root.rglob("*"):
            if path.is_file():
                assert SUBJECT not in path.read_bytes().decode("utf-8", "ignore"), path


def _assert_not_in_database(experiment: str, needle: str) -> None:
    """Every text column of every table of the server's database, searched for ``needle``."""
    import psycopg2

    admin = _admin()
    with admin.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'privgen_registry_%'")
        names = [r[0] for r in cur.fetchall()]
    admin.close()
    searched = 0
    for name in names:
        with psycopg2.connect(dbname=name, connect_timeout=3, **PG) as conn, \
                conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM experiments WHERE name = %s", (experiment,))
            if cur.fetchone()[0] == 0:
                continue  # another session's server
            cur.execute("SELECT table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = 'public' AND data_type IN "
                        "('text', 'character varying')")
            for table, column in cur.fetchall():
                cur.execute(f'SELECT count(*) FROM "{table}" WHERE "{column}" LIKE %s',
                            (f"%{needle}%",))
                assert cur.fetchone()[0] == 0, f"{needle!r} in {table}.{column}"
                searched += 1
    assert searched > 20
