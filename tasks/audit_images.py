"""The privacy audit of an image generator (issue 14): membership inference on what the family
offers — its ELBO (``log_prob``, convvae) or its private discriminator's score
(``discriminator_score``, dcgan) — and the black-box distance-to-closest-record attack on its
samples for every family, each held against the (ε, δ) bound; the non-private control of the
same family audited on the same records beside it, and the paired power test of
``tasks.audit_power``.

Results keep the keys of ``tasks.evaluate_audit.audit_generator`` (``mia_attack``, ``mia``,
``mia_scores``, ``dcr_*``, ``verdict``), so the power test, the verdict and the registration
gates read them as they read a table's or a text's audit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models import images as img
from models.base import Generator
from tasks import audit_mia, audit_power, tracking
from tasks.audit import AuditConfig, audit_verdict
from tasks.evaluate_audit import measured


def image_digest(frame: pd.DataFrame) -> str:
    """Which images (pixels and label), in which order, an attack scored: the control's
    scores pair with the candidate's only when equal (``audit_power.pairing_digest``)."""
    arr = img.to_array(frame)
    labels = frame[img.LABEL].astype(str).tolist() if img.LABEL in frame else [""] * len(arr)
    return audit_power.pairing_digest([f"{hashlib.sha256(a.tobytes()).hexdigest()}:{y}"
                                       for a, y in zip(arr, labels, strict=True)])


def white_box_loss(model: Generator) -> tuple[str, Any] | None:
    """(name, rows → [N] loss, lower = "member") from the family's own score, None without
    one: the negative ELBO (an upper bound on −log p, nats) where it has ``log_prob``, the
    negative logit of its DP-trained discriminator where it has ``discriminator_score``."""
    if model.has_log_prob:
        return "elbo", lambda rows: -np.asarray(model.log_prob(rows), dtype=float)
    if callable(getattr(model, "discriminator_score", None)):
        return "discriminator", lambda rows: -np.asarray(model.discriminator_score(rows),
                                                         dtype=float)
    return None


def dcr_losses(members: pd.DataFrame, nonmembers: pd.DataFrame,
               synth: pd.DataFrame) -> dict[str, list[float]]:
    """Each member's and non-member's Euclidean pixel distance (intensities in [0, 1]) to its
    closest image in ``synth``: a generator that copies its training images draws images
    nearer its members (Chen et al. 2020, GAN-Leaks' black-box attack). ValueError when a
    side is empty."""
    from sklearn.neighbors import NearestNeighbors

    if not len(synth) or not len(members) or not len(nonmembers):
        raise ValueError(f"the distance attack needs images on each side: {len(members)} "
                         f"members, {len(nonmembers)} non-members, {len(synth)} synthetic")

    def flat(frame: pd.DataFrame) -> np.ndarray:
        arr = img.to_array(frame)
        return arr.reshape(len(arr), -1).astype(np.float32) / 255.0

    nn = NearestNeighbors(n_neighbors=1).fit(flat(synth))
    return {side: nn.kneighbors(flat(frame))[0][:, 0].astype(float).tolist()
            for side, frame in (("members", members), ("nonmembers", nonmembers))}


def _attack(results: dict[str, Any], gate: str, losses: Callable[[], dict[str, list[float]]],
            digest: str, audit: AuditConfig, epsilon: float, delta: float) -> None:
    """``results[<gate>_attack]`` (the loss-threshold attack on ``losses()``), ``<gate>_scores``
    (the losses and the images' digest, for the power test) and ``<gate>`` (the DP-bound
    check); None with the reason under ``not_computed`` when the data cannot support it."""
    def run() -> dict[str, float]:
        scores = losses()
        results[f"{gate}_scores"] = {**scores, "records": digest}
        return audit_mia.loss_threshold_mia(np.array(scores["members"]),
                                            np.array(scores["nonmembers"]), audit.mia_fprs)

    measured(results, f"{gate}_attack", run)
    if results[f"{gate}_attack"] is not None:
        results[gate] = audit_mia.mia_within_bound(results[f"{gate}_attack"], epsilon, delta,
                                                   fprs=audit.mia_fprs,
                                                   confidence=audit.mia_confidence)


def audit_model(model: Generator, members: pd.DataFrame, nonmembers: pd.DataFrame,
                synth: pd.DataFrame, audit: AuditConfig) -> dict[str, Any]:
    """Every attack ``model`` allows on ``members`` (training images) and ``nonmembers``
    (held-out ones), as many of each; ``synth``: its drawn images. Keys: ``mia_attack``
    (``loss_threshold_mia``), ``mia`` (``mia_within_bound`` at the model's ε, δ),
    ``mia_scores`` (per-image losses and the images' digest) and ``white_box`` (its kind)
    where the family has a score of its own; the same ``dcr_*`` for the distance attack;
    ``epsilon``; ``verdict`` (gate → "pass" / "fail: why", an attack that could not run
    failing its gate); ``not_computed``."""
    fit = model.fit_result
    epsilon, delta = (fit.epsilon, fit.delta) if fit is not None else (math.inf, 0.0)
    digest = image_digest(pd.concat([members, nonmembers], ignore_index=True))
    results: dict[str, Any] = {"epsilon": epsilon}
    if (white := white_box_loss(model)) is not None:
        name, loss = white
        results["white_box"] = name
        _attack(results, "mia", lambda: {"members": loss(members).tolist(),
                                         "nonmembers": loss(nonmembers).tolist()},
                digest, audit, epsilon, delta)
    _attack(results, "dcr", lambda: dcr_losses(members, nonmembers, synth), digest, audit,
            epsilon, delta)
    results["verdict"] = audit_verdict(results, audit)
    for name, why in results.get("not_computed", {}).items():
        results["verdict"][name.removesuffix("_attack")] = f"fail: not computed ({why})"
    return results


def audit_images(model: Generator, control: Generator | None, members_df: pd.DataFrame,
                 nonmembers_df: pd.DataFrame, *, n: int = 1000, seed: int = 0,
                 audit: AuditConfig | None = None) -> dict[str, Any]:
    """The audit of ``model`` and of its non-private ``control`` (same family, data and
    seed; None: no control) on the same images: a random sample of ``members_df`` (training
    images) and as many of ``nonmembers_df`` (held-out), at most ``audit.mia_records``
    each; each model draws ``n`` images (``seed``) for the distance attack.

    Keys: ``candidate`` and ``control`` (``audit_model``; control None without one) and
    ``power`` (``audit_power.audit_power`` of the two: the audit has power when the control
    leaks measurably more; None without a control)."""
    audit = audit or AuditConfig()
    k = min(audit.mia_records, len(members_df), len(nonmembers_df))
    members = members_df.sample(k, random_state=seed).reset_index(drop=True)
    nonmembers = nonmembers_df.head(k).reset_index(drop=True)
    out: dict[str, Any] = {"members": k, "nonmembers": k, "control": None, "power": None}
    for role, gen in (("candidate", model), ("control", control)):
        if gen is not None:
            out[role] = audit_model(gen, members, nonmembers, gen.sample(n, seed), audit)
    if control is not None:
        out["power"] = audit_power.audit_power({"audit": out["candidate"]},
                                               {"audit": out["control"]},
                                               alpha=audit.power_alpha, seed=seed)
    return out


def audit_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The audit's numbers as MLflow metrics: ``audit.<attack>.auc`` and TPRs (the
    candidate), ``audit.control.<attack>.auc`` ..., ``audit.power.has_power`` and each
    paired ``audit.power.<attack>.difference_lower``."""
    out: dict[str, float] = {}
    for role, prefix in (("candidate", "audit"), ("control", "audit.control")):
        for attack in ("mia", "dcr"):
            for key, value in ((result.get(role) or {}).get(f"{attack}_attack") or {}).items():
                out[f"{prefix}.{attack}.{key}"] = float(value)
    if (power := result.get("power")) is not None:
        out["audit.power.has_power"] = float(power["has_power"])
        for attack in ("mia", "dcr"):
            if "difference_lower" in power.get(attack, {}):
                out[f"audit.power.{attack}.difference_lower"] = power[attack]["difference_lower"]
    return {k: v for k, v in out.items() if math.isfinite(v)}


@task(name="audit-images", cache_policy=NO_CACHE)
def audit_images_task(model_dir: str, control_dir: str | None, train_path: str,
                      holdout_path: str, seed: int, run_id: str | None = None,
                      audit: AuditConfig | None = None, n: int = 1000,
                      out_dir: str | None = None) -> dict[str, Any]:
    """Audit the model in ``model_dir`` beside the control in ``control_dir`` (None: no
    control) on the canonical NPZs of the training and held-out images; metrics to MLflow run
    ``run_id``, ``audit_images.json`` in ``out_dir`` (each when given).

    Returns the candidate's audit as ``evaluate`` returns a table's (``verdict``, ``*_attack``,
    the DP-bound checks; per-image scores left out), with ``control`` (``{"audit": ...}``,
    the control's, as the datasheet reads a control's evaluation; None without one) and
    ``power`` (``audit_power``; None without a control)."""
    from pathlib import Path

    from models.base import load
    from tasks.images import load_canonical
    from tasks.storage import write_json

    result = audit_images(load(model_dir), load(control_dir) if control_dir else None,
                          load_canonical(train_path), load_canonical(holdout_path), n=n, seed=seed,
                          audit=audit)

    def brief(audited: dict) -> dict:
        return {k: v for k, v in audited.items() if not k.endswith("_scores")}

    out = {**brief(result["candidate"]), "members": result["members"],
           "control": {"audit": brief(result["control"])} if result["control"] else None,
           "power": result["power"]}
    if out_dir is not None:
        write_json(out, Path(out_dir) / "audit_images.json")
    if run_id is not None:
        tracking.log_metrics(run_id, audit_metrics(result))
    log = get_run_logger()
    log.info("image audit verdict: %s", out["verdict"])
    if out["power"] is not None:
        (log.info if out["power"]["has_power"] else log.warning)("%s", out["power"]["summary"])
    return out
