"""benchmarks/tabular_peers.py: auto runs as the train stage runs it, earlier rows merge, and
acceptance compares auto with the best DP peer (issue 13)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks import spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
tabular_peers = pytest.importorskip("tabular_peers")
tabular_privgen = pytest.importorskip("tabular_privgen")


def _table(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    housing = rng.choice(["no", "yes"], n)
    return pd.DataFrame({"housing": housing, "age": rng.integers(18, 60, n),
                         "y": np.where((housing == "no") & (rng.random(n) < 0.6), "yes", "no")})


@pytest.mark.skipif(not spec.available("aim"), reason="models/marginal.py not installed")
def test_auto_in_the_benchmark_is_the_train_stages_auto_with_the_label_as_target():
    train = _table()
    contract = tabular_privgen.public_contract(train, ["housing", "y"], ["age"])
    synth, row = tabular_privgen.run_privgen("auto", train, contract, 1.0, 1e-4, 20, 0,
                                             label="y", quick=True)
    assert row["family"] == "aim" and row["config"]["target"] == "y"
    assert "aim.target y" in row["family_reason"] and len(synth) == 20
    _, plain = tabular_privgen.run_privgen("aim", train, contract, 1.0, 1e-4, 20, 0,
                                           label="y", quick=True)
    assert "target" not in plain["config"]


def _report(path: Path, rows: list[dict], data: str = "bank-full", **extra) -> Path:
    path.write_text(json.dumps({"data": data, "seed": 0, "rows": rows, **extra}))
    return path


def test_merge_keeps_rows_not_redone_and_prefers_results_over_errors(tmp_path):
    ctx = {"data": "bank-full", "seed": 0}
    first = _report(tmp_path / "a.json", [
        {"method": "auto", "epsilon": 1.0, "roc_auc": 0.77},
        {"method": "tvae", "epsilon": 1.0, "error": "ImportError"},
        {"method": "sdv_gaussian_copula", "epsilon": math.inf, "roc_auc": 0.78}],
        started="T1")
    second = _report(tmp_path / "b.json", [
        {"method": "tvae", "epsilon": 1.0, "roc_auc": 0.6},
        {"method": "auto", "epsilon": 1.0, "error": "killed"}], started="T2")
    rows = {(r["method"], r["epsilon"]): r for r in tabular_peers.carried(
        [first, second], ctx, ["mst"], [1.0])}
    assert rows[("auto", 1.0)] == {"method": "auto", "epsilon": 1.0, "roc_auc": 0.77,
                                   "carried_from": "T1"}
    assert rows[("tvae", 1.0)]["roc_auc"] == 0.6 and rows[("tvae", 1.0)]["carried_from"] == "T2"
    assert ("sdv_gaussian_copula", math.inf) in rows
    # What this run redoes is not carried.
    redone = tabular_peers.carried([first], ctx, ["auto", "sdv_gaussian_copula"], [1.0])
    assert [r["method"] for r in redone] == ["tvae"]
    with pytest.raises(SystemExit, match="demo"):
        tabular_peers.carried([_report(tmp_path / "c.json", [], data="demo")], ctx, [], [1.0])


def test_acceptance_compares_auto_with_the_best_dp_peer():
    def row(method, auc, tvd, seconds=100.0):
        return {"method": method, "epsilon": 1.0, "roc_auc": auc, "tvd_2way": tvd,
                "fit_seconds": seconds, "sample_seconds": 1.0}
    peers = [row("smartnoise_mst", 0.80, 0.05), row("smartnoise_aim", 0.70, 0.03),
             {"method": "sdv_gaussian_copula", "epsilon": 1.0, "roc_auc": 0.99,
              "tvd_2way": 0.0}]
    ok = tabular_peers.acceptance([row("auto", 0.795, 0.039), *peers], [1.0])["epsilon_1"]
    assert ok["auc"]["ok"] and ok["tvd_2way"]["ok"] and ok["time"]["ok"]
    assert ok["auc"]["best_dp_peer"] == 0.80 and ok["tvd_2way"]["best_dp_peer"] == 0.03
    bad = tabular_peers.acceptance([row("auto", 0.78, 0.05, 700.0), *peers], [1.0])
    assert not any(bad["epsilon_1"][k]["ok"] for k in ("auc", "tvd_2way", "time"))
    assert not tabular_peers.acceptance([*peers], [1.0])["epsilon_1"]["checked"]
