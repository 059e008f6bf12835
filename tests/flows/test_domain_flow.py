"""The privacy leak through the contract, end to end (issue 12): an unedited --infer proposal
lists every category and the oldest age; the run estimates them under DP, reports one composed
ε that preflight predicted, and no rare category or extreme age reaches the model's release
rules, its datasheet or its synthetic records."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from flows.config import load_config
from flows.generation import generation_flow
from flows.training import training_flow
from tasks import infer
from tasks.generate import GenerateConfig
from tasks.ingest import IngestConfig

pytestmark = pytest.mark.slow
MODEL = "privgen-domains"
RARE = "Astronaut"


def test_observed_domains_are_paid_for_and_never_released_as_observed(prefect_api, tmp_path):
    rng = np.random.default_rng(5)
    n = 1500
    df = pd.DataFrame({
        "job": rng.choice(["Clerk", "Nurse", "Driver", "Teacher"], n),
        "hours": rng.integers(20, 61, n),
        "outcome": rng.choice(["no", "yes"], n, p=[0.7, 0.3]),
    })
    df.loc[7, "job"], df.loc[9, "hours"] = RARE, 99
    data = tmp_path / "people.csv"
    df.to_csv(data, index=False)
    proposal = infer.infer(data, IngestConfig(path=data))
    specs = {c.name: c for c in proposal.contract.columns}
    assert RARE in specs["job"].allowed and specs["hours"].max == 99  # what the data showed
    config = tmp_path / "c.yaml"
    config.write_text(proposal.to_yaml())
    cfg = load_config(config, overrides=[
        "train.family=causal_lm",  # these flows test the causal LM's own path
        f"workdir={tmp_path / 'runs'}", f"register.model_name={MODEL}", "train.epochs=1",
        "train.batch_size=128", "train.model.n_embd=32", "train.model.n_layer=1",
        "train.model.block_size=48", "register.max_perplexity=1000", "audit.enabled=false",
        "register.require_audit=false", "evaluate.synthetic_records=40", "evaluate.samples=4"])
    trained = training_flow(cfg)

    t = trained["train"]
    assert t["domain_spend"]["releases"] == 2 + 3  # job, outcome; hours: ladder + 2 steps
    assert t["epsilon"] <= 8.0 and t["epsilon"] > t["epsilon_sgd"]
    assert trained["preflight"]["epsilon"] == pytest.approx(t["epsilon"], rel=0.02)
    assert t["epsilon_pld"] == pytest.approx(t["epsilon"], rel=0.03)
    run = mlflow.get_run(trained["run_id"])
    assert float(run.data.metrics["privacy.epsilon"]) == pytest.approx(t["epsilon"])

    rules = json.loads((Path(t["model_dir"]) / "release.json").read_text())
    job = next(c for c in rules["columns"] if c["name"] == "job")
    hours = next(c for c in rules["columns"] if c["name"] == "hours")
    assert RARE not in job["allowed"] and len(job["allowed"]) == 4
    assert hours["max"] < 99

    client = mlflow.MlflowClient()
    sheet_path = client.download_artifacts(trained["run_id"], "datasheet/datasheet.json",
                                           str(tmp_path))
    sheet = json.loads(Path(sheet_path).read_text())
    assert set(sheet["released_domains"]["paid_for"]) == {"job", "hours", "outcome"}
    assert RARE not in json.dumps(sheet)

    out = tmp_path / "out" / "synthetic.csv"
    generation_flow(GenerateConfig(model=f"{MODEL}/{trained['model']['version']}", n=40,
                                   out=out, temperature=1.0))
    records = pd.read_csv(out, dtype=str)
    assert RARE not in set(records["job"])
    assert pd.to_numeric(records["hours"]).max() <= hours["max"]
