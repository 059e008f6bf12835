"""`privgen run --preflight` for a table family (issue 13): the domain plan resolves the family,
the observed domains are priced against that family's own DP-SGD, and preflight states and
dry-runs that plan, with nothing of the causal LM's."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from flows.config import load_config
from flows.training import training_flow
from tasks import infer
from tasks.ingest import IngestConfig

pytestmark = pytest.mark.slow


def test_preflight_states_and_dry_runs_a_table_familys_own_plan(prefect_api, tmp_path):
    rng = np.random.default_rng(3)
    n = 400
    df = pd.DataFrame({"job": rng.choice(["Clerk", "Nurse", "Driver"], n),
                       "hours": rng.integers(20, 61, n),
                       "outcome": rng.choice(["no", "yes"], n)})
    data = tmp_path / "people.csv"
    df.to_csv(data, index=False)
    config = tmp_path / "c.yaml"
    config.write_text(infer.infer(data, IngestConfig(path=data)).to_yaml())
    cfg = load_config(config, overrides=[
        f"workdir={tmp_path / 'runs'}", "train.family=tvae", "train.tvae.epochs=2",
        "train.tvae.batch_size=60", "train.tvae.hidden=[8]", "train.tvae.latent_dim=2",
        "audit.enabled=false"])
    result = training_flow(cfg, preflight_only=True)
    plan = result["preflight"]

    records = plan["records"]
    batches = -(-records // 60)
    assert plan["family"] == "tvae" and plan["domain_releases"] > 0  # observed domains priced
    assert (plan["steps"], plan["sample_rate"]) == (2 * batches, 1 / batches)
    assert plan["epsilon"] <= 8.0 and plan["epsilon"] == pytest.approx(8.0, rel=0.02)
    assert plan["dry_run_seconds"] > 0 and plan["summary"].count("tvae DP-SGD") == 1
    run = mlflow.get_run(result["run_id"])
    assert run.data.params["preflight.family"] == "tvae"
    logged = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/preflight.json"))
    assert logged["plan"]["events"][0]["sigma"] == pytest.approx(plan["noise_multiplier"])

