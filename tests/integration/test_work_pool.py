"""Scheduled runs on a Prefect work pool (issue 16): a Prefect server on PostgreSQL (loopback),
`privgen serve --work-pool` registering both deployments, a `prefect worker` process running a
training run and a generation run to COMPLETED with their MLflow runs. A worker killed with the
flow run it started (SIGKILL, as when their machine is lost) leaves that run CRASHED in Prefect
once its heartbeats stop (the automation `privgen serve --work-pool` creates, about two minutes:
the crash test is the slow half), and `privgen run --resume RUN_ID` finishes it in the same
MLflow run."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from stack import (
    flow_run,
    flow_run_state,
    prefect_server,
    service,
    start_deployment,
    stop,
    wait_final,
)

from flows.deployments import CRASHED_AFTER_S

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TRAINING = "privgen-scheduled-training/training"
GENERATION = "privgen-scheduled-generation/generation"
POOL = "privgen-test-pool"


def _tiny_table(root: Path) -> Path:
    """A seeded table of 240 tickets with public domains (mst trains on it in seconds) and the
    config that trains on it."""
    rng = np.random.default_rng(16)
    products, cities = ["phone", "laptop", "earbuds", "speaker"], ["Austin", "Boston", "Denver"]
    pd.DataFrame({"customer_id": [f"C-{i:03d}" for i in rng.integers(0, 80, 240)],
                  "product": rng.choice(products, 240), "city": rng.choice(cities, 240),
                  "rating": rng.integers(1, 6, 240)}).to_csv(root / "tickets.csv", index=False)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "contract": {"columns": [
            {"name": "customer_id", "role": "id", "regex": r"^C-\d{3}$"},
            {"name": "product", "role": "category", "allowed": products},
            {"name": "city", "role": "category", "allowed": cities},
            {"name": "rating", "dtype": "integer", "role": "numeric", "min": 1, "max": 5}]},
        "ingest": {"path": "tickets.csv"}, "workdir": "runs", "experiment": "work-pool",
        "train": {"family": "mst", "privacy": {"target_epsilon": 1.0}},
        "audit": {"enabled": False}, "register": {"model_name": "work-pool-mst"},
        "evaluate": {"utility_label": "product", "samples": 2, "synthetic_records": 50}}))
    return config


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """The Prefect server, the deployments registered to POOL by `privgen serve --work-pool`
    from ``root`` (the runs' working directory), and the environment a worker gets."""
    root = tmp_path_factory.mktemp("work-pool")
    config = _tiny_table(root)
    with prefect_server(root, BIN) as api:
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(root / "prefect"),
               "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
               "PREFECT_WORKER_QUERY_SECONDS": "1"}
        # Crons far from any test run; the runs here are started by hand.
        res = subprocess.run([str(BIN / "privgen"), "serve", "--work-pool", POOL, "--config",
                              str(config), "--train-cron", "0 3 29 2 *", "--generate-cron",
                              "0 4 29 2 *", "--model", "work-pool-mst@challenger", "--n", "100",
                              "--out", "outputs/synthetic.csv"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        assert f"registered 2 deployments to work pool {POOL}" in " ".join(res.stdout.split())
        yield {"root": root, "api": api, "env": env, "config": config}


def _worker(pool, name: str):
    return service([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name],
                   pool["root"] / f"{name}.log", pool["env"])


def test_a_worker_runs_training_and_generation_with_their_mlflow_runs(pool):
    root, api = pool["root"], pool["api"]
    with _worker(pool, "worker-1"):
        training = start_deployment(api, TRAINING, {"config": str(pool["config"]),
                                                    "overrides": []})
        state = wait_final(api, training, 300, root / "worker-1.log")
        assert state["type"] == "COMPLETED", state["message"]
        generation = start_deployment(api, GENERATION, {})
        state = wait_final(api, generation, 300, root / "worker-1.log")
        assert state["type"] == "COMPLETED", state["message"]

    client = MlflowClient(pool["env"]["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs([client.get_experiment_by_name("work-pool").experiment_id],
                               "tags.`privgen.flow` = 'training'")
    assert run.info.status == "FINISHED"
    [version] = client.search_model_versions("name='work-pool-mst'")
    assert version.run_id == run.info.run_id
    # Relative paths resolved in the folder `privgen serve` was run from.
    assert (root / "runs" / run.info.run_name / "model").is_dir()
    assert len(pd.read_csv(root / "outputs" / "synthetic.csv")) == 100
    batches = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 "tags.`privgen.flow` = 'generation'")
    assert [b.info.status for b in batches] == ["FINISHED"]


def _kill_session(pid: int) -> None:
    """SIGKILL to every process of ``pid``'s session (the flow run's engine and whatever it
    started: the worker runs each flow run in a session of its own)."""
    sid = os.getsid(pid)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(proc.name)) == sid:
                    os.kill(int(proc.name), signal.SIGKILL)


def test_a_run_killed_with_its_worker_is_crashed_and_resumes(pool, demo_csv):
    root, api = pool["root"], pool["api"]
    subset = root / "demo.csv"
    subset.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:301]))
    runs = root / "crash-runs"
    # A tiny causal LM, as in the resume flow test: its checkpoint marks "mid-training".
    overrides = [f"workdir={runs}", f"ingest.path={subset}", "experiment=work-pool-crash",
                 "train.family=causal_lm", "register.model_name=work-pool-crash",
                 "train.epochs=4", "train.batch_size=32", "train.model.n_embd=32",
                 "train.model.n_layer=1", "register.max_perplexity=1000", "evaluate.samples=2",
                 "evaluate.synthetic_records=50", "audit.enabled=false"]
    with _worker(pool, "worker-2") as worker:
        flow_id = start_deployment(api, TRAINING, {"config": None, "overrides": overrides})
        deadline = time.monotonic() + 300
        while not list(runs.glob("*/model/checkpoint.pt")):
            assert worker.poll() is None and time.monotonic() < deadline, \
                (root / "worker-2.log").read_text()[-3000:]
            time.sleep(0.05)
        # The worker records the flow run's process as "host:pid".
        engine = int(flow_run(api, flow_id)["infrastructure_pid"].rsplit(":", 1)[-1])
        stop(worker, signal.SIGKILL)
        _kill_session(engine)
    assert flow_run_state(api, flow_id)["type"] == "RUNNING"

    state = wait_final(api, flow_id, CRASHED_AFTER_S + 120)
    assert state["type"] == "CRASHED", state
    client = MlflowClient(pool["env"]["MLFLOW_TRACKING_URI"])
    [run] = client.search_runs([client.get_experiment_by_name("work-pool-crash").experiment_id])
    assert run.info.status == "RUNNING"
    resumed = subprocess.run([str(BIN / "privgen"), "run", "--resume", run.info.run_id],
                             cwd=root, env=pool["env"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train.loss"))
    assert steps == [1, 2, 3, 4]
