"""DP training in two processes through the flow (issue 16): `--set
train.distributed.world_size=2` trains tvae (spending the one-process plan's ε) and the causal LM
(rank 0's epochs relayed to MLflow) under torchrun, gloo on loopback, and registers them. The
causal LM's checkpoint across world sizes: tests/unit/test_distributed.py; tvae does not
checkpoint."""

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.training import training_flow
from models import base, dpsgd
from tasks import composition
from tasks.train_family import budget_for

pytestmark = pytest.mark.slow
ROWS = 200


def _table(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    size = rng.choice(["s", "m", "l"], n)
    return pd.DataFrame({"age": rng.integers(18, 90, n), "size": size,
                         "spend": np.where(size == "l", 300, 50) + rng.integers(0, 40, n)})


def test_two_processes_train_register_and_spend_the_one_process_epsilon(prefect_api, tmp_path):
    from flows.config import load_config

    data, config = tmp_path / "table.csv", tmp_path / "table.yaml"
    _table(ROWS).to_csv(data, index=False)
    config.write_text(yaml.safe_dump({"contract": {"columns": [  # public domains: no spend
        {"name": "age", "dtype": "integer", "role": "numeric", "min": 18, "max": 90},
        {"name": "size", "role": "category", "allowed": ["s", "m", "l"]},
        {"name": "spend", "dtype": "integer", "role": "numeric", "min": 0, "max": 400}]},
        "evaluate": {"utility_label": "size"}}))
    cfg = load_config(config, [f"workdir={tmp_path / 'runs'}", f"ingest.path={data}",
                               "register.model_name=distributed-tvae", "train.family=tvae",
                               "train.distributed.world_size=2", "audit.control=false",
                               "evaluate.samples=2", "evaluate.synthetic_records=50",
                               "train.tvae.epochs=2", "train.tvae.batch_size=40",
                               "train.tvae.hidden=[16]", "train.tvae.latent_dim=4"])
    trained = training_flow(cfg)
    train = trained["train"]
    assert train["family"] == "tvae" and train["private"]
    version = mlflow.MlflowClient().get_model_version("distributed-tvae",
                                                      trained["model"]["version"])
    params = mlflow.get_run(version.run_id).data.params
    assert params["train.world_size"] == "2"
    # The one-process plan for the same records: the same σ, q, steps, hence ε.
    n = int(params["train.records"])
    gen = base.create("tvae", cfg.train.tvae)
    plan = dpsgd.plan(gen, n, 40, 2, budget_for(cfg.train, n, composition.DomainSpend()),
                      None, "DP-SGD")
    assert train["sample_rate"] == plan.params["q"] and train["steps"] == plan.params["steps"]
    assert train["noise_multiplier"] == pytest.approx(plan.params["sigma"], rel=1e-9)
    assert train["epsilon"] == pytest.approx(plan.epsilon, rel=1e-9) and train["epsilon"] <= 8
    assert base.load(train["model_dir"]).fit_result.params["sigma"] == train["noise_multiplier"]


def test_the_causal_lm_trains_in_two_processes_through_the_flow(prefect_api, tmp_path,
                                                                 demo_csv):
    from flows.config import load_config

    subset = tmp_path / "tickets.csv"
    subset.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:201]))
    cfg = load_config(None, [f"workdir={tmp_path / 'runs'}", f"ingest.path={subset}",
                             "register.model_name=distributed-lm", "train.family=causal_lm",
                             "train.distributed.world_size=2", "audit.control=false",
                             "evaluate.samples=2", "evaluate.synthetic_records=20",
                             "train.epochs=2", "train.batch_size=32", "train.model.n_embd=32",
                             "train.model.n_layer=1", "register.max_perplexity=1000"])
    train = training_flow(cfg)["train"]
    assert train["family"] == "causal_lm" and train["private"] and train["steps"] > 0
    version = mlflow.MlflowClient().get_model_version("distributed-lm", 1)
    params = mlflow.get_run(version.run_id).data.params
    assert params["train.world_size"] == "2"
    metrics = mlflow.MlflowClient().get_metric_history(version.run_id, "train.loss")
    assert sorted(m.step for m in metrics) == [1, 2]  # rank 0's epochs, relayed
    assert 0 < train["epsilon"] <= 8
