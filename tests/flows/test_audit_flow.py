"""A planted memorization — a model trained without DP on data with repeated canaries — is
refused promotion with the failed audit gate named, and its datasheet says so."""

import logging

import mlflow
import pytest

from flows.config import load_config
from flows.training import training_flow
from tasks import promotion
from tasks.errors import RegistryError

pytestmark = pytest.mark.slow
MODEL = "privgen-memorized"


def test_memorizing_model_is_refused_naming_the_audit_gate(prefect_api, tmp_path, demo_csv,
                                                           caplog):
    subset = tmp_path / "tickets.csv"
    subset.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:301]))
    cfg = load_config(overrides=[
        f"workdir={tmp_path / 'runs'}", f"ingest.path={subset}", f"register.model_name={MODEL}",
        "train.family=causal_lm",  # these flows test the causal LM's own path
        "train.privacy.enabled=false", "audit.canary_repeats=20", "train.epochs=3",
        "train.batch_size=32", "train.model.n_embd=32", "train.model.n_layer=1",
        "register.max_perplexity=1000", "evaluate.samples=2", "evaluate.synthetic_records=50",
    ])
    with caplog.at_level(logging.WARNING):
        result = training_flow(cfg)

    verdicts = result["model"]["verdicts"]
    assert not result["model"]["promoted"]
    assert verdicts["audit_canary"].startswith("fail: "), verdicts
    assert "gate audit_canary failed" in caplog.text
    assert result["eval"]["audit"]["canary"]["memorization_p_value"] < 0.01

    with pytest.raises(RegistryError, match="gate audit_canary failed"):
        promotion.promote(MODEL, result["model"]["version"], cfg.register_, cfg.promote)

    run = result["run_id"]
    sheet = mlflow.artifacts.load_dict(f"runs:/{run}/datasheet/datasheet.json")
    assert sheet["policy"]["verdict"] == "fail"
    assert sheet["privacy"]["private"] is False
    assert sheet["audit"]["verdict"]["canary"].startswith("fail")
    report = mlflow.artifacts.load_text(f"runs:/{run}/reports/audit.md")
    assert "| audit gate: canary | fail:" in report
    version = mlflow.MlflowClient().get_model_version(MODEL, result["model"]["version"])
    assert version.tags["audit.verdict"] == "fail"
