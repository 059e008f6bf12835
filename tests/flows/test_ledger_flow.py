"""Issue 15's acceptance for the ledger: two scheduled-style runs of the same config on the same
people, then `privgen budget --json` reports a composed ε that a second accountant matches
within 5 % and that is below the plain sum; a third run that would cross
train.privacy.lifetime_budget is refused before anything is spent. The cheapest family (mst)
on a small table whose customers repeat and whose city list is estimated under DP."""

import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.cli_privacy import promotion_line
from flows.training import training_flow
from tasks import ledger_compose, ledger_store, spec
from tasks.errors import PrivacyError

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_registry_server import server_uri  # noqa: F401  (a fixture, used by name)

sys.path.pop(0)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not spec.available("mst"), reason="mst is not installed")]
_PRODUCTS = ["phone", "laptop", "earbuds", "speaker"]
_CITIES = ["Austin", "Boston", "Denver"]


def _contract() -> list[dict]:
    return [
        {"name": "customer_id", "role": "id", "regex": r"^C-\d{3}$"},
        {"name": "product", "role": "category", "allowed": _PRODUCTS},
        # Observed, not declared: the domain stage estimates it under DP (a ledger release).
        {"name": "city", "role": "category", "domain": "observed", "allowed": _CITIES},
        {"name": "rating", "dtype": "integer", "role": "numeric", "min": 1, "max": 5},
    ]


def write_data(root: Path, n: int = 240, first_id: int = 0) -> tuple[Path, Path]:
    """A seeded table of ``n`` tickets from n/3 customers (ids from ``first_id``), and the
    config bringing its contract. The tests share one MLflow store, so a test that needs a
    population of its own gives it customers no other test has (the ledger links runs that
    share people)."""
    rng = np.random.default_rng(15)
    frame = pd.DataFrame({
        "customer_id": [f"C-{first_id + i:03d}" for i in rng.integers(0, n // 3, n)],
        "product": rng.choice(_PRODUCTS, n), "city": rng.choice(_CITIES, n),
        "rating": rng.integers(1, 6, n)})
    data, config = root / "tickets.csv", root / "ledger.yaml"
    frame.to_csv(data, index=False)
    config.write_text(yaml.safe_dump({"contract": {"columns": _contract()},
                                      "evaluate": {"utility_label": "product"}}))
    return data, config


def run(root: Path, data: Path, config: Path, *overrides: str) -> dict:
    from flows.config import load_config

    cfg = load_config(config, [f"workdir={root / 'runs'}", f"ingest.path={data}",
                               "register.model_name=ledger-mst", "train.family=mst",
                               "train.privacy.target_epsilon=1.0", "audit.enabled=false",
                               "evaluate.samples=2", "evaluate.synthetic_records=50",
                               *overrides])
    return training_flow(cfg)


def budget_json(population: str) -> dict:
    result = CliRunner().invoke(app, ["budget", "--dataset", population, "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    return row


def two_runs_then_a_refused_third(root: Path) -> None:
    """The acceptance, against whichever MLflow store the environment names."""
    data, config = write_data(root)
    first = run(root, data, config)
    second = run(root, data, config)
    population = ledger_store.population_of(first["run_id"])
    assert population and population == ledger_store.population_of(second["run_id"])

    row = budget_json(population)
    assert row["releases"] == 2 and [r["run_id"] for r in row["runs"]] == [
        first["run_id"], second["run_id"]]
    assert all(r["releases"] == "domains+train" and r["private"] for r in row["runs"])
    assert row["plain_sum"] == pytest.approx(first["train"]["epsilon"]
                                             + second["train"]["epsilon"])
    assert row["epsilon"] < row["plain_sum"]
    assert row["epsilon_check"] == pytest.approx(row["epsilon"], rel=0.05)
    assert row["basis"] == "subject column customer_id"
    shown = promotion_line("ledger-mst", second["model"]["version"])
    assert population in shown and "2 release(s)" in shown
    raw = set(pd.read_csv(data)["customer_id"])
    assert not raw & set(json.dumps(row).replace('"', " ").split()), "no raw id in the ledger"

    # A lifetime budget the two runs fit in and a third of the same config would cross.
    entries = ledger_store.entries(population)
    third = ledger_compose.compose([*entries, entries[-1]])["epsilon"]
    lifetime = (row["epsilon"] + third) / 2
    with pytest.raises(PrivacyError, match=f"lifetime_budget={lifetime:g}.*{population}.*"
                                           "as run .* of the same config spent"):
        run(root, data, config, f"train.privacy.lifetime_budget={lifetime}")
    refused = mlflow.search_runs(experiment_names=["privgen"], output_format="list",
                                 order_by=["attributes.start_time DESC"], max_results=1)[0]
    assert refused.info.status == "FAILED"
    assert "privacy.domain_releases" in refused.data.params, "it stopped after the plan"
    assert not any(k.startswith(("mst.", "privacy.epsilon")) for k in
                   [*refused.data.params, *refused.data.metrics]), "nothing was trained"
    assert len(ledger_store.entries(population)) == 2, "nothing was spent"
    # More rows and new customers make a new population, but its old members have spent the
    # same: the run is refused all the same.
    grown = root / "grown.csv"
    frame = pd.read_csv(data)
    new = frame.head(30).assign(customer_id=[f"C-{900 + i}" for i in range(30)])
    pd.concat([frame, new]).to_csv(grown, index=False)
    with pytest.raises(PrivacyError, match=r"most exposed data subject.*basic composition"
                       ) as refused_too:
        run(root, grown, config, f"train.privacy.lifetime_budget={lifetime}")
    assert population not in str(refused_too.value)
    assert budget_json(population)["lifetime_budget"] is None  # the two runs set none
    result = CliRunner().invoke(app, ["budget", "--dataset", population, "--lifetime",
                                      str(lifetime)])
    assert result.exit_code == 0 and population in result.stdout


def test_two_runs_compose_below_their_sum_and_a_third_is_refused(prefect_api, tmp_path):
    two_runs_then_a_refused_third(tmp_path)


def test_the_datasheet_shows_the_population_at_training_time(prefect_api, tmp_path):
    data, config = write_data(tmp_path, n=120, first_id=600)
    trained = run(tmp_path, data, config, "register.model_name=ledger-sheet")
    sheet = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=trained["run_id"], artifact_path="datasheet/datasheet.json")).read_text())
    assert sheet["ledger"]["population"] == ledger_store.population_of(trained["run_id"])
    assert sheet["ledger"]["releases"] == 1
    assert sheet["ledger"]["epsilon"] == pytest.approx(trained["train"]["epsilon"], rel=0.05)



@pytest.mark.integration
def test_the_ledger_on_the_postgresql_backed_server(prefect_api, tmp_path, monkeypatch,
                                                    request):
    """The same against an MLflow server on PostgreSQL (the compose stack's store), started
    by tests/integration/test_registry_server.py's fixture (skipped without PostgreSQL)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("server_uri"))
    two_runs_then_a_refused_third(tmp_path)
