"""The privacy datasheet says what a DPO asks, from stage results only."""

import json

from tasks import datasheet
from tasks.register import RegisterConfig, audit_gates, audit_summary

TRAIN = {"epsilon": 7.99, "delta": 3.8e-5, "accountant": "prv", "private": True,
         "epsilon_pld": 7.98, "sample_rate": 0.0238, "steps": 126, "epochs": 3,
         "noise_multiplier": 0.55}
AUDIT = {"canary": {"exposure": [1.2, 3.4], "exposure_max": 3.4, "resolution_bits": 9.97,
                    "repeats": 1},
         "mia_attack": {"auc": 0.51}, "mia": {"auc_bound": 0.99, "within_bound": True},
         "replay": {"ngram_copy_rate": 0.2, "holdout_ngram_rate": 0.3},
         "verdict": {"canary": "pass", "mia": "pass", "replay": "pass"}}


def _sheet(tmp_path, verdicts=None, control=None, power=None):
    anon = tmp_path / "anonymized.parquet"
    (tmp_path / "anonymization_report.json").write_text(json.dumps(
        {"k": 5, "smallest_class": 5, "rows_suppressed": 0, "key_id": "48998a5fb5f2",
         "operators": {"email": "drop"}, "entities_replaced": {"PERSON": 3}}))
    return datasheet.build(
        name="m", version="3", train=TRAIN, evaluation={"perplexity": 9.2, "audit": AUDIT},
        verdicts=verdicts or {"private": "pass", "audit_canary": "pass"},
        lineage={"source": "tickets.csv", "source_digest": "ab" * 32,
                 "validation": {"rows_in": 3000, "rows_kept": 2940, "rows_quarantined": 60},
                 "anonymized_path": str(anon)},
        privacy={"max_grad_norm": 1.0, "grad_sample_mode": "hooks", "secure_mode": False},
        model={"n_layer": 2}, control=control, power=power)


def test_datasheet_states_the_guarantee_lineage_and_audit(tmp_path):
    sheet = _sheet(tmp_path, control={"perplexity": 6.0, "audit": {
        "canary": {"exposure_max": 9.97}, "mia_attack": {"auc": 0.6},
        "mia_scores": {"members": [0.1] * 500, "nonmembers": [0.2] * 100, "records": "ab"}}},
        power={"has_power": True, "summary": "the audit has power: …"})
    p = sheet["privacy"]
    assert (p["epsilon"], p["delta"], p["accountant"], p["noise_multiplier"]) == (
        7.99, 3.8e-5, "prv", 0.55)
    assert "Poisson" in p["sampling"] and "1.0" in p["clipping"]
    assert p["unit_of_privacy"].startswith("record")
    assert sheet["anonymization"]["k"] == 5 and sheet["validation"]["rows_quarantined"] == 60
    assert sheet["policy"]["verdict"] == "pass"
    text = datasheet.markdown(sheet)
    for needle in ("7.99", "prv", "Poisson", "k: 5", "3.4 bits max exposure",
                   "non-private control: max canary exposure 9.97", "| audit_canary | pass |",
                   "- power: the audit has power"):
        assert needle in text, needle
    # Per-record losses serve the pairing with the control; the sheet keeps the summaries.
    assert "mia_scores" not in json.dumps(sheet)


def test_a_failed_gate_makes_the_datasheet_verdict_fail(tmp_path):
    sheet = _sheet(tmp_path, verdicts={"private": "pass", "audit_canary": "fail: 9.97 bits"})
    assert sheet["policy"]["verdict"] == "fail"
    assert "**Policy verdict: fail**" in datasheet.markdown(sheet)


def test_audit_gates_are_required_and_named():
    cfg = RegisterConfig()
    assert audit_gates({"perplexity": 9.0}, cfg) == {
        "audit": "fail: no privacy audit ran (set audit.enabled=true)"}
    failing = {"audit": {"verdict": {"canary": "fail: exposure", "mia": "pass"}}}
    gates = audit_gates(failing, cfg)
    assert gates == {"audit_canary": "fail: exposure", "audit_mia": "pass"}
    assert audit_summary(gates) == "fail" and audit_summary({"private": "pass"}) == "none"
    assert audit_gates({}, RegisterConfig(require_audit=False)) == {}


def test_a_table_family_sheet_names_its_mechanism_events_and_column_provenance():
    train = {"epsilon": 2.9, "delta": 1e-5, "accountant": "rdp", "private": True,
             "epsilon_pld": 2.95, "epsilon_sgd": 2.5, "family": "aim", "family_reason":
             "3 structured columns, no text", "mechanism": "aim (Private-PGM)",
             "events": [{"kind": "zcdp", "rho": 0.12}], "params": {"rho": 0.12, "rounds": 4},
             "sample_rate": 1.0, "steps": 4, "epochs": 0, "noise_multiplier": 0.0,
             "domain_spend": {"noise_multiplier": 20.0, "releases": 2, "delta": 1e-6}}
    model = {"family": "aim", "config": {"rounds": 4}, "spec": {"fields": [
        {"name": "job", "kind": "categorical"}, {"name": "age", "kind": "numeric"},
        {"name": "note", "kind": "text"}]}}
    sheet = datasheet.build(name="m", version="1", train=train, evaluation={}, verdicts={},
                            lineage={"domains": {"estimated": {"job": {"fields": ["allowed"]}}}},
                            privacy={}, model=model, control=None)
    assert sheet["model"]["family"] == "aim" and sheet["model"]["config"] == {"rounds": 4}
    assert sheet["privacy"]["mechanism_params"] == {"rho": 0.12, "rounds": 4}
    assert "sampling" not in sheet["privacy"]  # no DP-SGD: no Poisson sampling to state
    assert sheet["columns"] == {"job": "estimated under DP (paid for)", "age": "declared public",
                                "note": "free text"}
    composition = sheet["privacy"]["composition"]
    assert "ρ-zCDP ρ 0.12" in composition and "2 Gaussian domain releases" in composition
    assert "check accountant (dp-accounting) gives ε 2.95" in composition
    text = datasheet.markdown(sheet)
    assert "- family: aim (3 structured columns, no text)" in text
    assert "- job: estimated under DP (paid for)" in text


def test_the_replay_line_says_when_held_out_texts_leave_the_test_no_power(tmp_path):
    text = datasheet.markdown(_sheet(tmp_path))
    assert "rate vs held-out 0.3" in text
    assert "cannot tell copying" not in text
    AUDIT["replay"]["holdout_ngram_rate"] = 1.0
    try:
        assert "this test cannot tell copying here" in datasheet.markdown(_sheet(tmp_path))
    finally:
        AUDIT["replay"]["holdout_ngram_rate"] = 0.3
