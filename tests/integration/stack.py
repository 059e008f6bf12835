"""The compose stack's services started natively on loopback for the integration tests: a
PostgreSQL database per service, server processes in their own sessions, and Prefect's REST API
for what a test asks of a flow run. Each helper ends or drops only what it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its name), dropped afterwards; skips the test when no
    PostgreSQL accepts user ``postgres`` on 127.0.0.1:5432."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {exc}".splitlines()[0])
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def stop(proc: subprocess.Popen, signum: int = signal.SIGTERM, grace: float = 30) -> None:
    """Ends ``proc``'s process group (it was started in a session of its own)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def service(cmd: list[str], log: Path, env: dict, health: str | None = None,
            timeout: float = 300, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """``cmd`` started in its own session, output to ``log``; with ``health``, yielded once that
    URL answers 200 (the test fails with the log's tail if the process dies or ``timeout``
    seconds pass first). Stopped with its process group on exit."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while health is not None:
                with contextlib.suppress(OSError), \
                        urllib.request.urlopen(health, timeout=2) as res:
                    if res.status == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{Path(cmd[0]).name} did not start:\n"
                                + log.read_text()[-3000:])
                time.sleep(0.5)
            yield proc
        finally:
            stop(proc)


@contextlib.contextmanager
def prefect_server(root: Path, bindir: Path) -> Iterator[str]:
    """A Prefect server on its own PostgreSQL database, as the compose stack runs it; yields
    its API URL."""
    with database("privgen_prefect") as db:
        port = free_port()
        env = {**os.environ, "PREFECT_HOME": str(root / "prefect-server"),
               "PREFECT_API_DATABASE_CONNECTION_URL":
                   f"postgresql+asyncpg://{PG['user']}@{PG['host']}:{PG['port']}/{db}",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        url = f"http://127.0.0.1:{port}/api"
        with service([str(bindir / "prefect"), "server", "start", "--host", "127.0.0.1",
                      "--port", str(port)], root / "prefect-server.log", env, f"{url}/health"):
            yield url


def start_deployment(api: str, name: str, parameters: dict) -> str:
    """A flow run of deployment ``flow/deployment`` with ``parameters``; returns its id."""
    import httpx

    dep = httpx.get(f"{api}/deployments/name/{name}", timeout=30)
    dep.raise_for_status()
    run = httpx.post(f"{api}/deployments/{dep.json()['id']}/create_flow_run",
                     json={"parameters": parameters}, timeout=30)
    run.raise_for_status()
    return run.json()["id"]


def flow_run(api: str, run_id: str) -> dict:
    import httpx

    res = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30)
    res.raise_for_status()
    return res.json()


def flow_run_state(api: str, run_id: str) -> dict:
    return flow_run(api, run_id)["state"]


def wait_final(api: str, run_id: str, timeout: float, log: Path | None = None) -> dict:
    """The flow run's state once it is final; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        state = flow_run_state(api, run_id)
        if state["type"] in FINAL:
            return state
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"flow run {run_id} still {state['type']} after {timeout} s\n{tail}")
        time.sleep(1)
