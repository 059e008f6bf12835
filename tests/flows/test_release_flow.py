"""A census-like table whose ``age`` is an integer quasi-identifier: the proposal ``--infer``
writes, unedited, trains, registers and generates records in age's released form (issue 12:
0 usable records of 1,000 draws, all ``parse:integer:age``)."""

import json
import re
from pathlib import Path

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
MODEL = "privgen-census"


def _census(n: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "workclass": rng.choice(["Private", "Self-emp", "Local-gov"], n, p=[0.7, 0.2, 0.1]),
        "hours_per_week": rng.integers(10, 70, n),
        "outcome": rng.choice(["no", "yes"], n, p=[0.75, 0.25]),  # the last field
    })


def test_an_inferred_integer_quasi_identifier_runs_through_training_and_generation(
        prefect_api, tmp_path):
    data = tmp_path / "adult.csv"
    _census(400).to_csv(data, index=False)
    proposal = infer.infer(data, IngestConfig(path=data))
    spec = {c.name: c for c in proposal.contract.columns}["age"]
    assert (spec.role, spec.dtype) == ("quasi_identifier", "integer")
    config = tmp_path / "c.yaml"
    config.write_text(proposal.to_yaml())  # as `privgen validate --infer` writes it, unedited
    cfg = load_config(config, overrides=[
        f"workdir={tmp_path / 'runs'}", f"ingest.path={data}", f"register.model_name={MODEL}",
        "train.family=causal_lm",  # these flows test the causal LM's own path
        "train.epochs=2", "train.batch_size=64", "train.model.n_embd=32", "train.model.n_layer=1",
        "train.model.block_size=64", "register.max_perplexity=1000", "audit.enabled=false",
        "register.require_audit=false", "evaluate.synthetic_records=60", "evaluate.samples=4"])
    trained = training_flow(cfg)
    model_dir = trained["train"]["model_dir"]
    rules = json.loads((Path(model_dir) / "release.json").read_text())
    age = next(c for c in rules["columns"] if c["name"] == "age")
    assert age["dtype"] == "string" and "30-39" in age["allowed"]
    # Every field has a released form the grammar holds samples to: nothing fails to parse.
    assert trained["eval"]["usable_rate"] >= 0.9, trained["eval"]["sample_rejections"]
    assert trained["model"]["promoted"], trained["model"]

    out = tmp_path / "out" / "synthetic.csv"
    manifest = generation_flow(GenerateConfig(model=f"{MODEL}/{trained['model']['version']}",
                                              n=40, out=out, temperature=0.8))
    assert manifest["written"] == 40
    assert not any(k.startswith("parse:integer") for k in manifest["rejected"])
    assert manifest["contract"]["source"] == "the model's release.json"
    records = pd.read_csv(out, dtype=str)
    assert records["age"].map(lambda v: re.fullmatch(r"\d+-\d+|\*", v) is not None).all()
    assert set(records["outcome"]) <= {"no", "yes"}  # its form holds in the last field too
