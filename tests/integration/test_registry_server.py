"""Promote, rollback, history and concurrent promotions against a real MLflow server on
loopback with PostgreSQL as its backend store, as in the compose stack.

Needs PostgreSQL on 127.0.0.1:5432 accepting user ``postgres`` (skipped otherwise); a fresh
database is created for the session and dropped afterwards.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tasks import promotion
from tasks.errors import RegistryError
from tasks.register import RegisterConfig

pytestmark = pytest.mark.integration

CFG, POLICY = RegisterConfig(), promotion.PromotionConfig()
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin():
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL for the registry server: {exc}".splitlines()[0])
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    return conn


@pytest.fixture(scope="session")
def server_uri(tmp_path_factory):
    admin = _admin()
    db = f"privgen_registry_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    root, port = tmp_path_factory.mktemp("mlflow-server"), _free_port()
    log = (root / "server.log").open("w")
    # Two workers: concurrent requests reach different processes sharing the database.
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{db}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        # Creating the schema and starting two workers took 351 s on 2 cores at load 18.
        deadline = time.monotonic() + 600
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as res:
                    if res.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("MLflow server did not start:\n"
                            + (root / "server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield uri
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers, nothing else
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def client(server_uri, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("PRIVGEN_ACTOR", "ops-bob")
    return MlflowClient(tracking_uri=server_uri)


def tags(ppl: float = 6.0, private: bool = True) -> dict:
    return {"privacy.epsilon": "3.0", "privacy.delta": "1e-05", "privacy.private": str(private),
            "eval.perplexity": str(ppl), "eval.usable_rate": "0.97", "audit.verdict": "pass"}



def champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def test_promote_refuse_force_rollback_and_history_on_the_server(client, make_model):
    name = make_model(client, tags(6.0), tags(5.9), tags(private=False))
    promotion.promote(name, "1", CFG, POLICY, client=client)
    promotion.promote(name, "2", CFG, POLICY, client=client)
    with pytest.raises(RegistryError, match="gate private failed"):
        promotion.promote(name, "3", CFG, POLICY, client=client)
    promotion.promote(name, "3", CFG, POLICY, force=True, reason="INC-9", client=client)
    assert promotion.rollback(name, client=client)["to"] == "2"
    assert champion(client, name) == "2"
    h = promotion.history(name, client=client)
    assert [(e["seq"], e["action"], e["from"], e["to"], e["actor"]) for e in h] == [
        (1, "promote", None, "1", "ops-bob"), (2, "promote", "1", "2", "ops-bob"),
        (3, "force-promote", "2", "3", "ops-bob"), (4, "rollback", "3", "2", "ops-bob")]
    assert h[2]["reason"] == "INC-9"
    assert {str(mv.version): mv.current_stage
            for mv in client.search_model_versions(f"name='{name}'")} == {
        "1": "Archived", "2": "Production", "3": "Archived"}


def test_two_simultaneous_promotions_on_the_server(client, server_uri, make_model):
    name = make_model(client, tags(6.0), tags(6.0), tags(6.0))
    promotion.promote(name, "1", CFG, POLICY, client=client)
    start, done, seen, errors = threading.Barrier(3), threading.Event(), set(), []

    def promote(version):
        start.wait()
        try:
            promotion.promote(name, version, CFG, POLICY, client=MlflowClient(server_uri))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    def read():
        start.wait()
        reader = MlflowClient(server_uri)
        while not done.is_set():
            seen.add(champion(reader, name))

    threads = [threading.Thread(target=promote, args=(v,)) for v in "23"]
    threads.append(threading.Thread(target=read))
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join(60)
    done.set()
    threads[2].join(10)
    assert errors == []
    h = promotion.history(name, client=client)
    assert [e["seq"] for e in h] == [1, 2, 3] and h[2]["from"] == h[1]["to"]
    assert champion(client, name) == h[2]["to"] and seen and seen <= {"1", "2", "3"}
    stages = [mv.current_stage for mv in client.search_model_versions(f"name='{name}'")]
    assert stages.count("Production") == 1


def test_cli_history_reads_the_server(client, server_uri, monkeypatch, make_model):
    from flows.cli import app

    name = make_model(client, tags(6.0))
    promotion.promote(name, "1", CFG, POLICY, client=client)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_uri)
    shown = CliRunner().invoke(app, ["history", name, "--json"])
    assert shown.exit_code == 0, f"{shown.output} {shown.exception!r}"
    assert [(e["action"], e["to"]) for e in json.loads(shown.stdout)] == [("promote", "1")]
