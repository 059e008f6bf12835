"""The privacy audit of any generator family, by what the family offers: membership inference
on −log_prob, canaries and the DP-bound check where it has a likelihood; black-box attacks on
its samples (distance to closest record, DOMIAS) always; replay where it writes text.

The attacks themselves are pure functions in ``tasks.audit`` and ``tasks.audit_blackbox``;
this module picks the records they compare and keeps their scores for the power test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from models.base import Generator
from tasks import audit_blackbox, audit_mia, audit_power
from tasks.audit import AuditConfig, Canaries, audit_verdict, canary_exposures
from tasks.audit_replay import replay_stats
from tasks.errors import InputError


def measured(out: dict[str, Any], name: str, compute: Callable[[], Any]) -> None:
    """``out[name]`` = ``compute()``, or None with the reason under ``out["not_computed"]``
    when the data is too small for it: a metric that cannot be computed on small data is
    reported as such, never a crash after training has spent the budget (issue 12)."""
    try:
        out[name] = compute()
    except (InputError, ValueError) as exc:  # their messages name counts and columns only
        out[name] = None
        out.setdefault("not_computed", {})[name] = str(exc)


def plain_rows(frame: pd.DataFrame) -> list[dict]:
    """The records of ``frame`` as JSON-ready dicts (missing → None, numpy scalars → Python)."""
    def plain(v: Any) -> Any:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        return v.item() if isinstance(v, np.generic) else v

    return [{k: plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def record_line(row: dict) -> str:
    """One record as a line of text (JSON, keys in the spec's order), for any family."""
    return json.dumps(row, ensure_ascii=False, default=str)


def _attack(results: dict[str, Any], gate: str,
            run: Callable[[], tuple[dict[str, float], dict]], scored: list[pd.DataFrame],
            audit: AuditConfig, epsilon: float, delta: float) -> None:
    """``results[<gate>_attack]`` from ``run()`` (attack result, per-record losses), its
    losses as ``<gate>_scores`` with the digest of the ``scored`` records (members, then
    non-members) that pairs them with the control's, and the DP-bound check as ``gate``."""
    name = f"{gate}_attack"
    measured(results, name, run)
    if results[name] is None:
        return
    attack, losses = results[name]
    results[name] = attack
    results[f"{gate}_scores"] = {**losses, "records": audit_power.pairing_digest(
        [row for frame in scored for row in plain_rows(frame)])}
    results[gate] = audit_mia.mia_within_bound(attack, epsilon, delta, fprs=audit.mia_fprs,
                                                   confidence=audit.mia_confidence)


def _loss_mia(gen: Generator, members: pd.DataFrame, nonmembers: pd.DataFrame,
              audit: AuditConfig) -> tuple[dict[str, float], dict]:
    """The loss attack on −log_prob, calibrated (``audit.mia_reference``) by the text columns'
    log-likelihood under the public unigram model: loss = −(log p_model − log p_reference)."""
    def loss(rows: pd.DataFrame) -> np.ndarray:
        score = gen.log_prob(rows)
        if audit.mia_reference == "unigram":
            for field in gen.spec.text:
                score = score - audit_mia.unigram_log_prob(rows[field.name].tolist())
        return -score

    loss_m, loss_n = loss(members), loss(nonmembers)
    attack = audit_mia.loss_threshold_mia(loss_m, loss_n, audit.mia_fprs)
    attack["reference"] = audit.mia_reference if gen.spec.text else "none"
    return attack, {"members": loss_m.tolist(), "nonmembers": loss_n.tolist()}


def _canaries(gen: Generator, canaries: dict, audit: AuditConfig,
              rng: np.random.Generator) -> dict[str, Any]:
    planted = Canaries(tuple(canaries["secrets"]), canaries["template"], canaries["digits"])
    base, column = canaries["base_row"], canaries["text_column"]

    def score(texts: list[str]) -> np.ndarray:  # one canary record per candidate secret
        rows = pd.DataFrame([{**base, column: t} for t in texts], columns=gen.spec.names)
        # Every candidate is as long as the canary, so −log p ranks them as the per-token
        # log-perplexity of the Secret Sharer does.
        return -gen.log_prob(rows)

    out = canary_exposures(score, planted, audit.n_candidates, rng)
    out["repeats"] = canaries["repeats"]
    out["planted"] = audit_power.pairing_digest(planted.texts)
    return out


def audit_generator(gen: Generator, train_df: pd.DataFrame, holdout: pd.DataFrame,
                    synth: pd.DataFrame, replayed: list[dict], canaries: dict | None,
                    audit: AuditConfig, epsilon: float, delta: float,
                    seed: int) -> dict[str, Any]:
    """Every attack ``gen`` allows, on members (a random sample of ``train_df``) and held-out
    non-members (``holdout``), each held against the (ε, δ) bound and ``audit``'s gates.

    ``synth``: records drawn as generation draws them; ``replayed``: those the draw refused
    for copying training text. Keys: ``mia_attack``/``mia``/``mia_scores`` (loss =
    −log_prob; families with ``has_log_prob``), ``canary`` (with ``canaries``, the train
    result's canary file, and a likelihood), ``dcr_*`` and ``domias_*`` (black-box, on the
    structured columns; DOMIAS's reference is the second half of ``holdout``, the first half
    the non-members), ``replay`` (text columns), ``verdict`` (gate → "pass" / "fail: why";
    an attack that could not run fails its gate, saying why), ``not_computed``."""
    rng = np.random.default_rng([seed, 0xA0D17])
    results: dict[str, Any] = {}
    spec = gen.spec
    members = train_df.sample(min(audit.mia_records, len(train_df)), random_state=seed)
    if gen.has_log_prob:
        nonmembers = holdout.head(audit.mia_records)
        _attack(results, "mia", lambda: _loss_mia(gen, members, nonmembers, audit),
                [members, nonmembers], audit, epsilon, delta)
        if canaries is not None:
            results["canary"] = _canaries(gen, canaries, audit, rng)
    if spec.structured:
        outside, reference = audit_blackbox.split_holdout(holdout, audit.mia_records)
        # As many members as non-members: the share of synthetic records nearer a member
        # than any non-member is then 0.5 for a generator that copies nobody.
        inside = members.head(len(outside))
        _attack(results, "dcr", lambda: audit_blackbox.dcr_attack(
            inside, outside, synth, spec.fields, audit.mia_fprs), [inside, outside],
            audit, epsilon, delta)
        _attack(results, "domias", lambda: audit_blackbox.domias_attack(
            inside, outside, synth, reference, spec.fields, audit.mia_fprs),
            [inside, outside], audit, epsilon, delta)
    if spec.text:
        column = spec.text[0].name
        measured(results, "replay", lambda: replay_stats(
            synth[column].tolist() + [r.get(column) for r in replayed],
            train_df[column].tolist(), holdout[column].tolist(), n=audit.replay_ngram))
        if results["replay"] is not None:
            results["replay"]["filtered"] = float(len(replayed))
    results["verdict"] = audit_verdict(results, audit)
    # A test that could not run is no pass: its gate fails, saying why.
    for name, why in results.get("not_computed", {}).items():
        results["verdict"][name.removesuffix("_attack")] = f"fail: not computed ({why})"
    return results

