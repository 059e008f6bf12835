"""The privacy datasheet of a model version: what a data protection officer asks before synthetic
data leaves the company, in one JSON document and its markdown rendering.

Built from stage results only (counts, settings, verdicts): never a data value, never the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _anonymization(anonymized_path: str | None) -> dict[str, Any]:
    if not anonymized_path:
        return {}
    report = Path(anonymized_path).parent / "anonymization_report.json"
    return json.loads(report.read_text()) if report.is_file() else {}


def build(*, name: str, version: str, train: dict, evaluation: dict, verdicts: dict[str, str],
          lineage: dict, privacy: dict, model: dict, control: dict | None,
          power: dict | None = None) -> dict[str, Any]:
    """``lineage``: source, digests and the validate/anonymize stage results; ``privacy``: the
    training privacy config; ``model``: the model folder's ``family.json`` (family, config,
    spec, fit); ``control``: the non-private control's evaluation, when one was trained, and
    ``power`` its paired comparison with this model's audit (``tasks.audit_power``)."""
    anon = _anonymization(lineage.get("anonymized_path"))
    validation = lineage.get("validation", {})
    audit = evaluation.get("audit", {})
    passed = all(v == "pass" for v in verdicts.values())
    family = train.get("family", model.get("family", "causal_lm"))
    params = train.get("params") or (model.get("fit") or {}).get("params") or {}
    dpsgd = any(e.get("kind") == "gaussian" and e.get("q", 1) < 1
                for e in train.get("events") or []) or "events" not in train
    return {
        "model": {"name": name, "version": version, "family": family,
                  "family_reason": train.get("family_reason"),
                  "config": model.get("config", model),
                  # Text families: what the vocabulary is and whether the data shaped it.
                  "vocabulary": params.get("vocabulary", params.get("text.vocabulary")),
                  "tokenizer_fit_on_private_data": False},
        "privacy": {
            "epsilon": train["epsilon"], "delta": train["delta"],
            "accountant": train["accountant"], "private": train["private"],
            "mechanism": train.get("mechanism", "dp-sgd"),
            "mechanism_params": {k: v for k, v in params.items()
                                 if k not in ("vocabulary", "text.vocabulary")},
            "events": train.get("events"),
            "epsilon_cross_check": train.get("epsilon_pld"),
            "composition": _composition(train),
            **({"sampling": f"Poisson, rate {train['sample_rate']:.5g} per step",
                "steps": train["steps"], "epochs": train["epochs"],
                "clipping": f"per-record L2 norm {privacy.get('max_grad_norm')}",
                "noise_multiplier": train["noise_multiplier"],
                "grad_sample_mode": privacy.get("grad_sample_mode")} if dpsgd else {}),
            "secure_mode": privacy.get("secure_mode"),
            "unit_of_privacy": "record: one training row. A person with k rows is protected as "
                               "a group, at about k·ε.",
        },
        "columns": _columns(model.get("spec"), lineage.get("domains")),
        "lineage": {"source": lineage.get("source"),
                    "source_sha256": lineage.get("source_digest"),
                    "config_hash": lineage.get("config_digest"),
                    "code_version": lineage.get("code_version")},
        "released_domains": _domains(lineage.get("domains")),
        "ledger": _ledger(lineage.get("ledger")),
        "validation": {k: validation.get(k) for k in ("rows_in", "rows_kept",
                                                       "rows_quarantined")},
        "anonymization": {k: anon.get(k) for k in (
            "operators", "entities_replaced", "k", "smallest_class", "rows_generalized",
            "rows_suppressed", "l_diversity", "residual_identifiers", "key_id")}
        # Images are not anonymized (issue 14): the data owner's statement stands in its place.
        | ({"statement": lineage["anonymization_statement"]}
           if lineage.get("anonymization_statement") else {}),
        "evaluation": {"perplexity": evaluation.get("perplexity"),
                       "utility": evaluation.get("utility", {})},
        "audit": _summary(audit),
        "control": None if control is None else {
            "epsilon": "∞ (non-private)", "perplexity": control.get("perplexity"),
            "audit": _summary(control.get("audit", {})), "power": power},
        "policy": {"verdict": "pass" if passed else "fail", "gates": verdicts},
    }


def _composition(train: dict) -> str:
    spend = train.get("domain_spend") or {}
    mechanism = train.get("mechanism", "DP-SGD")
    events = train.get("events")
    own = "" if not events else " (events: " + "; ".join(_event(e) for e in events) + ")"
    if not train.get("private"):
        return "not private: trained without noise or clipping (ε ∞)"
    check = train.get("epsilon_pld")
    checked = "" if check is None else f"; the check accountant (dp-accounting) gives ε {check:.4g}"
    if not spend.get("releases"):
        return f"{mechanism} only{own}, by the {train['accountant']} accountant{checked}"
    return (f"{mechanism}{own} (ε {train['epsilon_sgd']:.4g} alone) composed with "
            f"{spend['releases']} Gaussian domain releases (σ {spend['noise_multiplier']:.4g}) by "
            f"one accountant ({train['accountant']}); δ includes {spend['delta']:.3g} for "
            f"category thresholds{checked}")


def _event(e: dict) -> str:
    if e.get("kind") == "zcdp":
        return f"ρ-zCDP ρ {e['rho']:.4g}"
    return f"Gaussian σ {e['sigma']:.4g}, q {e['q']:.4g}, {e['steps']} steps"


def _ledger(spent: dict | None) -> dict[str, Any] | None:
    """The population's composed ε over every release on it, this one included, when it was
    trained (``tasks.ledger.record_task``); None for a run that recorded none."""
    if not spent or "composed" not in spent:
        return None
    c = spent["composed"]
    return {"population": spent["population"], "releases": c["releases"],
            "epsilon": c["epsilon"], "delta": c["delta"], "accountant": c["accountant"],
            "epsilon_check": c["epsilon_check"], "plain_sum": c["plain_sum"],
            "lifetime_budget": spent.get("lifetime_budget")}


def _columns(spec: dict | None, domains: dict | None) -> dict[str, str]:
    """Per generated column, where the values it may take came from: declared public by the
    data owner, estimated under DP (paid for in ε), or free text (the text family's own)."""
    domains = domains or {}
    out = {}
    for f in (spec or {}).get("fields", []):
        name = f["name"]
        out[name] = ("free text" if f["kind"] == "text" else
                     "estimated under DP (paid for)" if name in domains.get("estimated", {})
                     else "declared public")
    return out


def _domains(report: dict | None) -> dict[str, Any]:
    """Which contract values generation keeps records to were declared public by the data
    owner and which were paid for under DP (mechanism, noise, how many categories released:
    never a value that was only observed)."""
    report = report or {}
    return {"declared_public": report.get("public", {}),
            "paid_for": report.get("estimated", {}),
            "budget_share": report.get("share", 0.0),
            "observed_not_released": report.get("withheld", {})}


def _summary(audit: dict) -> dict:
    # Per-record losses are for pairing with the control (audit_power), not for the sheet.
    return {k: v for k, v in audit.items() if k != "mia_scores"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "—"
    return "—" if value is None else str(value)


def markdown(sheet: dict[str, Any]) -> str:
    m, p, a = sheet["model"], sheet["privacy"], sheet["audit"]
    lines = [f"# Privacy datasheet: {m['name']} version {m['version']}", "",
             f"**Policy verdict: {sheet['policy']['verdict']}**", "", "## Privacy guarantee", ""]
    lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in p.items()]
    lines[4:4] = [f"- family: {m.get('family')} ({_fmt(m.get('family_reason'))})",
                  f"- vocabulary: {_fmt(m.get('vocabulary'))}", ""]
    lines += ["", "## Columns", ""]
    lines += [f"- {c}: {where}" for c, where in (sheet.get("columns") or {}).items()]
    lines += ["", "## Data lineage", ""]
    lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in sheet["lineage"].items()]
    lines += [f"- validation: {_fmt(sheet['validation'])}", "", "## Released domains", ""]
    dom = sheet.get("released_domains") or {}
    lines += [f"- declared public by the data owner: {c} ({', '.join(f)})"
              for c, f in dom.get("declared_public", {}).items()]
    if dom.get("paid_for"):
        lines.append(f"- paid for under DP (DP-SGD was held to {1 - dom.get('budget_share', 0):.0%}"
                     " of the ε target; these take the rest, composed into the ε above):")
    lines += [f"  - {c} ({', '.join(e['fields'])}): {e.get('mechanism')}, σ "
              f"{_fmt(e.get('noise_multiplier'))}"
              + (f", {e['categories_released']} categories released"
                 if "categories_released" in e else "")
              + (f", released {_fmt(e['bounds_released'])}" if "bounds_released" in e else "")
              for c, e in dom.get("paid_for", {}).items()]
    lines += [f"- observed, not released: {c} ({', '.join(f)})"
              for c, f in dom.get("observed_not_released", {}).items()]
    if not any(dom.get(k) for k in ("declared_public", "paid_for", "observed_not_released")):
        lines.append("- none: generation keeps to no category list or bound")
    lines += ["", "## Privacy ledger (every release on the same people)", ""]
    led = sheet.get("ledger")
    lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in led.items()] if led else [
        "- no ledger entry: the run predates the ledger"]
    lines += ["", "## Anonymization", ""]
    lines += [f"- {k.replace('_', ' ')}: {_fmt(v)}" for k, v in sheet["anonymization"].items()]
    lines += ["", "## Evaluation", "", f"- held-out perplexity: "
              f"{_fmt(sheet['evaluation']['perplexity'])}"]
    utility = sheet["evaluation"]["utility"]
    for key in ("detection", "tstr"):
        if key in utility:
            lines.append(f"- {key}: {_fmt(utility[key])}")
    lines += ["", "## Privacy audit", ""]
    if a:
        canary, replay = a.get("canary", {}), a.get("replay", {})
        lines += [f"- canaries: {canary.get('exposure_max', '—')} bits max exposure over "
                  f"{len(canary.get('exposure', []))} canaries ({canary.get('repeats', '—')} "
                  f"copies each; fails at {_fmt(canary.get('resolution_bits'))} bits, or when "
                  f"the mean exposure is above chance: p "
                  f"{_fmt(canary.get('memorization_p_value'))})",
                  f"- membership inference: AUC {_fmt(a.get('mia_attack', {}).get('auc'))} "
                  f"(DP ceiling {_fmt(a.get('mia', {}).get('auc_bound'))})",
                  f"- replay: {_fmt(replay.get('ngram_copy_rate'))} n-gram copy "
                  f"rate vs held-out {_fmt(replay.get('holdout_ngram_rate'))}"
                  + (" (held-out texts share n-grams with the training texts as often: this "
                     "test cannot tell copying here; generation still rejects each record "
                     "that copies training text)"
                     if (replay.get("holdout_ngram_rate") or 0) >= 0.95 else "")]
    else:
        lines.append("- not run")
    if sheet["control"]:
        ca = sheet["control"]["audit"]
        lines += [f"- non-private control: max canary exposure "
                  f"{_fmt(ca.get('canary', {}).get('exposure_max'))} bits, MIA AUC "
                  f"{_fmt(ca.get('mia_attack', {}).get('auc'))}"]
        if sheet["control"].get("power"):
            lines.append(f"- power: {sheet['control']['power']['summary']}")
    lines += ["", "## Erasure requests", "", _erasure(sheet.get("erasure"))]
    lines += ["", "## Gates", "", "| gate | verdict |", "|---|---|"]
    lines += [f"| {g} | {v.replace('|', '/')} |" for g, v in sheet["policy"]["gates"].items()]
    return "\n".join(lines) + "\n"


def _erasure(state: dict | None) -> str:
    """``state``: what `privgen erase` wrote into the sheet (tasks/erasure.py), if anything."""
    if not state or not state.get("requests"):
        return "- none affects this version (`privgen erase` records them here)"
    return (f"- **pending**: {len(state['requests'])} request(s) ({', '.join(state['requests'])})"
            " name a person this version was trained on; retrain without them (the next "
            "`privgen run` quarantines their rows) and retire this version")
