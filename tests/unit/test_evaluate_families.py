"""The evaluate stage on table families: utility and the black-box audit for every model
(perplexity None where the family has none), the log-prob attack where it has a likelihood,
and the non-private control's audit showing power on the same pairing of records. AIM is the
real family; small in-test generators stand in where a test needs a constructed leak."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from models import base
from models.base import FieldSpec, FitResult, Proposal, TableSpec
from tasks import evaluate as evaluate_stage
from tasks.audit import AuditConfig, make_canaries
from tasks.audit_power import audit_power
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.evaluate import EvaluateConfig, audit_table, evaluate, flat_metrics
from tasks.evaluate_audit import audit_generator

SPEC = TableSpec((FieldSpec("plan", "categorical", values=("basic", "plus", "pro")),
                  FieldSpec("churned", "categorical", values=("no", "yes")),
                  FieldSpec("amount", "numeric", low=0.0, high=20.0),
                  FieldSpec("age", "numeric", low=18, high=90, integer=True)))
CONTRACT = DataContract(columns=(
    ColumnSpec(name="plan", allowed=("basic", "plus", "pro")),
    ColumnSpec(name="churned", allowed=("no", "yes")),
    ColumnSpec(name="amount", dtype=DType.FLOAT, role=Role.NUMERIC, min=0, max=20),
    ColumnSpec(name="age", dtype=DType.INTEGER, role=Role.QUASI_IDENTIFIER, min=18, max=90)))


class Marginals(base.Generator):
    """Independent columns, each its training marginal (no likelihood); ``copy``: the rows of
    the training table themselves, a generator that leaks every member."""

    family = "toy_marginals"

    def fit(self, table, spec, budget, *, seed, on_progress=lambda m: None):
        self.spec, self.rows = spec, table.reset_index(drop=True)
        self.fit_result = FitResult(epsilon=budget.epsilon if budget.enabled else math.inf,
                                    delta=budget.delta, accountant="none", mechanism="toy",
                                    private=budget.enabled)
        return self.fit_result

    def _propose(self, n, seed, conditions):
        rng = np.random.default_rng(seed)
        if self.config.get("copy"):
            rows = self.rows.iloc[rng.choice(len(self.rows), n)].to_dict("records")
        else:
            rows = pd.DataFrame({c: self.rows[c].to_numpy()[rng.choice(len(self.rows), n)]
                                 for c in self.spec.names}).to_dict("records")
        return Proposal(rows, [None] * n, [None] * n)

    def _save(self, directory):
        self.rows.to_json(directory / "rows.json", orient="records")

    def _load(self, directory):
        self.rows = pd.read_json(directory / "rows.json", orient="records")


class Categorical(Marginals):
    """``Marginals`` with the likelihood of independent categorical columns."""

    family = "toy_categorical"
    has_log_prob = True

    def log_prob(self, rows):
        out = np.zeros(len(rows))
        for c in ("plan", "churned"):
            p = self.rows[c].value_counts(normalize=True)
            out += np.log(rows[c].map(p).fillna(1e-6).to_numpy(dtype=float))
        return out


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "pro"], n, p=[.5, .3, .2])
    amount = np.round(rng.gamma(2, 2.0, n).clip(0, 20), 2)
    churned = np.where(rng.random(n) < 0.2 + 0.4 * (plan == "basic"), "yes", "no")
    return pd.DataFrame({"plan": plan, "churned": churned, "amount": amount,
                         "age": rng.integers(18, 90, n)})


def _trained(tmp_path, family: str, train: pd.DataFrame, holdout: pd.DataFrame,
             private: bool = True, **config) -> dict:
    gen = base.create(family, config)
    budget = base.Budget(enabled=private, epsilon=1.0)
    fit = gen.fit(train, SPEC, budget, seed=0)
    out = tmp_path / f"{family}-{private}"
    gen.save(out / "model")
    train.to_parquet(out / "train.parquet")
    holdout.to_parquet(out / "holdout.parquet")
    return {"model_dir": str(out / "model"), "train_path": str(out / "train.parquet"),
            "holdout_path": str(out / "holdout.parquet"), "epsilon": fit.epsilon,
            "delta": fit.delta}


@pytest.fixture(autouse=True)
def _families(monkeypatch):
    monkeypatch.setitem(base.FAMILIES, "toy_marginals", f"{__name__}:Marginals")
    monkeypatch.setitem(base.FAMILIES, "toy_categorical", f"{__name__}:Categorical")


CFG = EvaluateConfig(samples=3, synthetic_records=60)


def test_aim_on_thirty_rows_gets_utility_and_every_audit_it_allows(tmp_path):
    # One round and few mirror-descent steps: the shape of the result, not AIM's quality.
    trained = _trained(tmp_path, "aim", _table(30, 0), _table(20, 1), rounds=1,
                       final_iters=50, round_iters=50)
    result = evaluate(trained, CONTRACT, CFG, AuditConfig(), seed=3)
    assert "perplexity" in result and result["perplexity"] is None
    assert result["usable_rate"] == 1.0 and result["family"] == "aim"
    assert len(result["samples"]) == 3 and set(json.loads(result["samples"][0])) == set(
        SPEC.names)
    utility = result["utility"]
    assert 0 <= utility["fidelity"]["tvd_mean"] <= 1 and utility["tstr_label"] == "plan"
    assert 0 <= utility["marginals"]["tvd_2way_mean"] <= 1
    audit = result["audit"]
    # AIM has a likelihood: the log-prob attack runs beside the black-box ones; no canary
    # without a canary file.
    assert audit["mia_attack"]["n_members"] == 30 and audit["mia_attack"]["n_nonmembers"] == 20
    assert audit["dcr_attack"]["n_members"] == audit["dcr_attack"]["n_nonmembers"] == 10
    assert 0 <= audit["domias_attack"]["auc"] <= 1 and "canary" not in audit
    assert set(audit["verdict"]) == {"mia", "dcr", "domias"}
    assert all(v == "pass" or v.startswith("fail: ") for v in audit["verdict"].values())
    metrics = flat_metrics(result)
    assert "eval.perplexity" not in metrics and "audit.dcr_attack.auc" in metrics
    assert "eval.marginals.tvd_1way_mean" in metrics and "audit.domias.auc_bound" in metrics
    # Each column's 1-way TVD (issue 13 compares them across families), averaging to the mean.
    per = {k: v for k, v in metrics.items() if k.startswith("eval.marginals.tvd_1way.")}
    assert {k.rsplit(".", 1)[1] for k in per} == {f.name for f in SPEC.structured}
    assert math.isclose(sum(per.values()) / len(per), metrics["eval.marginals.tvd_1way_mean"])
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    json.dumps(result, allow_nan=True)
    table = audit_table({"DP model": result})
    assert "| DCR attack AUC |" in table and "held-out perplexity" not in table
    assert "| audit gate: domias |" in table


def test_binary_label_gets_the_gradient_boosting_auc_beside_its_ceiling(tmp_path):
    trained = _trained(tmp_path, "toy_marginals", _table(200, 0), _table(60, 1))
    cfg = EvaluateConfig(samples=0, synthetic_records=150, utility_label="churned")
    utility = evaluate(trained, CONTRACT, cfg, AuditConfig(enabled=False), seed=3)["utility"]
    auc = utility["tstr_auc"]
    # Independent columns carry no plan → churn signal; the real rows do.
    assert auc["real"]["roc_auc"] > auc["synth"]["roc_auc"]
    assert auc["real"]["roc_auc"] > 0.6


def test_without_likelihood_only_the_black_box_audit_runs_and_too_few_records_fail_it():
    gen = base.create("toy_marginals", {})
    gen.fit(_table(40, 0), SPEC, base.Budget(), seed=0)
    synth = gen.sample(60, seed=1)
    audit = audit_generator(gen, _table(40, 0), _table(20, 1), synth, [], None, AuditConfig(),
                            1.0, 1e-5, seed=3)
    assert "mia_attack" not in audit and "canary" not in audit and "replay" not in audit
    assert audit["verdict"] == {"dcr": "pass", "domias": "pass"}
    small = audit_generator(gen, _table(40, 0), _table(6, 1), synth, [], None, AuditConfig(),
                            1.0, 1e-5, seed=3)
    assert small["dcr_attack"] is None and "dcr_scores" not in small
    assert small["verdict"]["dcr"].startswith("fail: not computed (the DCR attack needs at "
                                              "least 5")


def test_the_control_that_copies_its_members_shows_the_audits_power(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate_stage, "_utility", lambda *args: {})  # only the audit is read
    train, holdout = _table(100, 0), _table(80, 1)
    # 200 records drawn from 100 training rows: the copying control repeats most members.
    cfg = EvaluateConfig(samples=0, synthetic_records=200)
    fair = evaluate(_trained(tmp_path, "toy_categorical", train, holdout), CONTRACT, cfg,
                    AuditConfig(), seed=3)
    leaky = evaluate(_trained(tmp_path, "toy_categorical", train, holdout, private=False,
                              copy=True), CONTRACT, cfg, AuditConfig(), seed=3)
    assert fair["audit"]["mia_scores"]["records"] == leaky["audit"]["mia_scores"]["records"]
    assert fair["audit"]["dcr_scores"]["records"] == leaky["audit"]["dcr_scores"]["records"]
    assert leaky["audit"]["dcr_attack"]["auc"] > 0.75 > fair["audit"]["dcr_attack"]["auc"]
    assert leaky["audit"]["verdict"]["dcr"].startswith("fail")
    power = audit_power(fair, leaky)
    assert power["dcr"]["higher"]
    # The log-prob attack on independent categorical marginals sees no member: the audit's
    # power is not shown through it, and the summary says which attack fell short.
    assert not power["mia"]["higher"] and not power["has_power"]
    assert "membership inference NOT measurably higher" in power["summary"]


def _tickets(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = ["router", "refund", "late", "broken", "thanks", "screen", "battery", "again"]
    return pd.DataFrame({"product": rng.choice(["Nimbus", "Pulse"], n),
                         "rating": rng.integers(1, 6, n),
                         "message": [" ".join(rng.choice(words, 6)) for _ in range(n)]})


def test_the_causal_lm_keeps_perplexity_canaries_and_replay_beside_the_black_box(
        tiny_lm, tmp_path, monkeypatch):
    # Utility is the same code for every family (tested above); here it would only add time.
    monkeypatch.setattr(evaluate_stage, "_utility", lambda *args: {})
    train, holdout = _tickets(40, 0), _tickets(20, 1)
    train.to_parquet(tmp_path / "train.parquet")
    holdout.to_parquet(tmp_path / "holdout.parquet")
    planted = make_canaries(3, np.random.default_rng(0))
    (tmp_path / "canaries.json").write_text(json.dumps({
        "secrets": list(planted.secrets), "template": planted.template,
        "digits": planted.digits, "base_row": {"product": "Nimbus", "rating": 3},
        "text_column": "message", "repeats": 1}))
    trained = {"model_dir": str(tiny_lm.folder), "train_path": str(tmp_path / "train.parquet"),
               "holdout_path": str(tmp_path / "holdout.parquet"), "epsilon": 8.0,
               "delta": 1e-5, "canaries_path": str(tmp_path / "canaries.json")}
    result = evaluate(trained, tiny_lm.contract, EvaluateConfig(samples=2, synthetic_records=10),
                      AuditConfig(n_candidates=50), seed=3)
    # An untrained byte model: about as perplexed as the 256 byte values allow.
    assert 50 < result["perplexity"] < 1000 and result["family"] == "causal_lm"
    audit = result["audit"]
    assert audit["canary"]["n_candidates"] == 50 and len(audit["canary"]["exposure"]) == 3
    assert audit["mia_attack"]["n_members"] == 40 and audit["replay"] is not None
    assert {"mia", "canary", "dcr", "domias", "replay"} <= set(audit["verdict"])
    assert "eval.perplexity" in flat_metrics(result)
