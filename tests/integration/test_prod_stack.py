"""The production stack of docker-compose.yml, started natively on loopback (issue 16):
PostgreSQL databases for MLflow, its users and Prefect; an S3 object store for MLflow's
artifacts; the MLflow server with basic auth on, proxying the artifacts; the Prefect server.
The training and generation flows run through it on a tiny table.

The object store is moto's S3 server mode (``moto[server]``, pinned in requirements.lock):
MinIO, what the compose file runs, publishes no pip-installable binary, and nothing can be
downloaded here. Skipped only where PostgreSQL is missing (with that reason).

Probes, each failing if the stack is unsafe: an unauthenticated (or wrongly authenticated)
MLflow request is refused with 401; artifact paths with ``..`` are refused and write nothing;
every object the model versions put in the store is safetensors, JSON, ``allow_pickle=False``
numpy or plain text/code, none pickled; and `privgen generate` loads the model with every
unpickler disabled."""

import contextlib
import http.client
import io
import os
import secrets
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from stack import PG, database, free_port, prefect_server, service
from test_work_pool import _tiny_table

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
BUCKET = "mlflow-artifacts"
ADMIN = "admin"
# `privgen generate` with every unpickler raising: MLflow's cloudpickle of a python_model,
# torch.load of a full pickle, joblib... all go through these.
NO_PICKLE = """
import pickle, sys
def refuse(*args, **kwargs):
    raise RuntimeError("a pickle was loaded from the store")
class Refused(pickle.Unpickler):
    def load(self):
        refuse()
pickle.load = pickle.loads = refuse
pickle.Unpickler = Refused
from flows.cli import main
sys.argv = ["privgen", *sys.argv[1:]]
main()
"""
PICKLE_OPENINGS = {b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"}  # PROTO opcode
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".joblib", ".bin", ".ckpt"}


def _s3(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("prod-stack")
    config = _tiny_table(root)
    password = secrets.token_urlsafe(18)
    s3_port, mlflow_port = free_port(), free_port()
    s3_url = f"http://127.0.0.1:{s3_port}"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_TRACKING", "AWS_", "PREFECT_API"))}
    with contextlib.ExitStack() as up:
        mlflow_db = up.enter_context(database("privgen_mlflow"))
        auth_db = up.enter_context(database("privgen_mlflow_auth"))
        up.enter_context(service([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                  str(s3_port)], root / "s3.log", base,
                                 f"{s3_url}/moto-api/", 120))
        _s3(s3_url).create_bucket(Bucket=BUCKET)
        ini = root / "basic_auth.ini"
        pg = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}"
        ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {pg}/{auth_db}\n"
                       f"admin_username = {ADMIN}\nauthorization_function = "
                       "mlflow.server.auth:authenticate_request_basic_auth\n")
        server_env = {**base, "MLFLOW_AUTH_CONFIG_PATH": str(ini),
                      "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                      "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                      "MLFLOW_S3_ENDPOINT_URL": s3_url, "AWS_ACCESS_KEY_ID": "test",
                      "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        # Creating two schemas and starting took minutes on 2 loaded cores.
        up.enter_context(service(
            [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri",
             f"{pg}/{mlflow_db}", "--serve-artifacts", "--artifacts-destination",
             f"s3://{BUCKET}/", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1"], root / "mlflow.log", server_env, f"{mlflow_url}/health", 900))
        api = up.enter_context(prefect_server(root, BIN))
        # What a worker holds: the servers' addresses and its MLflow login, no S3 credential
        # (artifacts go through the MLflow server).
        client_env = {**base, "MLFLOW_TRACKING_URI": mlflow_url, "PREFECT_API_URL": api,
                      "MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": password,
                      "PREFECT_HOME": str(root / "prefect-client")}
        yield {"root": root, "config": config, "mlflow": mlflow_url, "s3": s3_url,
               "api": api, "env": client_env, "password": password}


@pytest.fixture(scope="module")
def flows_ran(stack):
    """`privgen run` then `privgen generate` (with unpickling disabled) through the stack."""
    root, env = stack["root"], stack["env"]
    run = subprocess.run([str(BIN / "privgen"), "run", "--config", str(stack["config"])],
                         cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    gen = subprocess.run([sys.executable, "-c", NO_PICKLE, "generate", "--model",
                          "work-pool-mst@challenger", "--n", "50", "--out", "synthetic.csv"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert gen.returncode == 0, gen.stdout[-2000:] + gen.stderr[-2000:]
    return stack


@pytest.fixture
def client(stack, monkeypatch) -> MlflowClient:
    """A client of the stack's MLflow, logged in (MLflow reads the login per request)."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, stack["env"][key])
    return MlflowClient(stack["mlflow"])


def test_training_and_generation_run_through_the_stack(flows_ran, client):
    import httpx

    assert len(pd.read_csv(flows_ran["root"] / "synthetic.csv")) == 50
    [run] = client.search_runs([client.get_experiment_by_name("work-pool").experiment_id],
                               "tags.`privgen.flow` = 'training'")
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied to the store
    runs = httpx.post(f"{flows_ran['api']}/flow_runs/filter", json={}, timeout=30).json()
    assert {r["state"]["type"] for r in runs} == {"COMPLETED"}
    assert len(runs) >= 2  # the training and the generation flow, on the Prefect server


def _request(stack, method: str, path: str, auth: tuple[str, str] | None = None,
             body: bytes | None = None) -> tuple[int, bytes]:
    """One raw HTTP request: ``path`` is sent as written (no client normalizes ``..``)."""
    import base64

    url = urlparse(stack["mlflow"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{auth[0]}:{auth[1]}".encode()).decode()
    conn.request(method, path, body=body, headers=headers)
    res = conn.getresponse()
    try:
        return res.status, res.read()
    finally:
        conn.close()


def test_unauthenticated_mlflow_requests_are_refused(stack):
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert _request(stack, "GET", search)[0] == 401
    assert _request(stack, "GET", search, (ADMIN, "not-the-password"))[0] == 401
    assert _request(stack, "GET", "/api/2.0/mlflow-artifacts/artifacts")[0] == 401
    assert _request(stack, "PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt",
                    body=b"x")[0] == 401
    assert _request(stack, "GET", search, (ADMIN, stack["password"]))[0] == 200


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/../../escape.txt"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/..%2F..%2Fescape.txt"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=0/../.."),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/../../escape.txt"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/..%2F..%2Fescape.txt"),
])
def test_artifact_paths_with_dot_dot_are_refused(stack, method, path):
    status, _ = _request(stack, method, path, (ADMIN, stack["password"]),
                         b"escaped" if method == "PUT" else None)
    assert status == 400, (status, path)  # MLflow: INVALID_PARAMETER_VALUE "Invalid path"
    keys = [o["Key"] for o in _s3(stack["s3"]).list_objects_v2(Bucket=BUCKET)
            .get("Contents", [])]
    assert not [k for k in keys if "escape" in k]


def _pickled(name: str, data: bytes) -> bool:
    """Whether ``data`` (an object named ``name``) is or holds a pickle: by name, by the
    pickle protocol's opening bytes, or, for a zip (``.npz``, torch's format), in a member or
    as a numpy array that needs ``allow_pickle``."""
    if Path(name).suffix in PICKLE_SUFFIXES or data[:2] in PICKLE_OPENINGS:
        return True
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if any(_pickled(m, z.read(m)) for m in z.namelist()):
                return True
        if name.endswith(".npz"):
            try:
                with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                    [arrays[k] for k in arrays.files]
            except ValueError:
                return True
    return False


def test_model_artifacts_in_the_store_are_never_pickles(flows_ran):
    s3 = _s3(flows_ran["s3"])
    objects = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
               for o in page.get("Contents", [])]
    model_files = [k for k in objects if "/models/" in k or "/artifacts/model/" in k]
    assert any(k.endswith("MLmodel") for k in model_files), objects[:20]
    assert any(k.endswith((".safetensors", ".json", ".npz")) for k in model_files)
    pickled = [k for k in objects if _pickled(k, s3.get_object(Bucket=BUCKET, Key=k)["Body"]
                                              .read())]
    assert pickled == []
    mlmodel = next(k for k in model_files if k.endswith("MLmodel"))
    text = s3.get_object(Bucket=BUCKET, Key=mlmodel)["Body"].read().decode()
    assert "python_model.pkl" not in text and "pyfunc_code.py" in text, text
