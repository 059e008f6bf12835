"""Train: the train stage for every generator family. The causal LM trains as it always has
(``tasks.train_lm`` over the DP-SGD loop in ``tasks.dpsgd``); every other family through
``models.base``: ``create``, ``fit`` within a ``Budget`` that composes the domain stage's
releases, ``save``. ``train.family: auto`` picks the family from the released columns.

Privacy is switched on in one place per family; the non-private control is the same family
with ``Budget(enabled=False)`` (the causal LM: ``tasks.dpsgd._privatize``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models import base
from tasks import release, train_config
from tasks.audit import AuditConfig, make_canaries
from tasks.contract import DataContract, Role
from tasks.dpsgd import (  # noqa: F401  (the loop's API, imported from here by older callers)
    SequenceDataset,
    TrainResult,
    _privatize,
    _StepGate,
    build_model,
    codec_for,
    encode,
    load_tokenizer,
    pad_batch,
    resolve_delta,
    train,
)
from tasks.storage import write_json, write_parquet
from tasks.train_config import Family, PrivacyConfig, TrainConfig  # noqa: F401
from tasks.train_family import Stage, train_family
from tasks.train_lm import train_causal_lm

if TYPE_CHECKING:  # the anonymize stage's scrubbing dependencies are heavy
    from tasks.anonymize import AnonymizeConfig

def split_holdout(df: pd.DataFrame, fraction: float,
                  seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    held = rng.random(len(df)) < fraction
    return df[~held].reset_index(drop=True), df[held].reset_index(drop=True)


def plant_canaries(train_df: pd.DataFrame, text_column: str, cfg: AuditConfig,
                   seed: int) -> tuple[pd.DataFrame, dict]:
    """Append ``cfg.n_canaries`` fake records, each ``cfg.canary_repeats`` times: one training
    row's other fields with a random secret in ``text_column``. Returns the frame and what the
    audit needs to score them (the secrets are random, never personal data)."""
    rng = np.random.default_rng([seed, 0xCA7A])
    canaries = make_canaries(cfg.n_canaries, rng, cfg.canary_template, cfg.canary_digits)
    row = train_df.iloc[int(rng.integers(len(train_df)))].to_dict()
    row = {k: None if pd.isna(v) else str(v) for k, v in row.items()}
    fake = pd.DataFrame([{**row, text_column: t} for t in canaries.texts
                         for _ in range(cfg.canary_repeats)]).astype(train_df.dtypes.to_dict(),
                                                                     errors="ignore")
    planted = {"secrets": list(canaries.secrets), "template": canaries.template,
               "digits": canaries.digits, "base_row": row, "text_column": text_column,
               "repeats": cfg.canary_repeats}
    return pd.concat([train_df, fake], ignore_index=True), planted


@task(name="train", cache_policy=NO_CACHE)
def train_task(anonymized_path: str, contract: DataContract, cfg: TrainConfig, seed: int,
               out_dir: str, run_id: str, resume: bool = False, audit: AuditConfig | None = None,
               prefix: str = "", anonymize: AnonymizeConfig | None = None,
               domain: dict | None = None, label: str | None = None) -> dict:
    """Train ``cfg.family`` (``auto``: chosen from the released columns) on the anonymized
    records. ``anonymize``: the settings that made them; with them, the model's release rules
    (``release.json``: each field's released type, values and form) are built from
    ``contract`` as the anonymize stage released it, else ``contract`` is taken to describe
    the data as released. ``resume``: the causal LM continues from ``out_dir``'s checkpoint
    when there is one, keeping its accountant history. ``audit``: plant its canaries in the
    training data (``canaries.json`` in ``out_dir``) for families with a likelihood and a text
    column. ``prefix``: put before every MLflow key, so a control model can share the run.
    ``domain``: the domain stage's result (``tasks.domain``): its releases are composed with
    the family's mechanism into every ε reported. ``label``: the evaluation label, which
    ``auto`` gives AIM as its target (``train_config.resolve_family``)."""
    stage = Stage(run_id, prefix, get_run_logger())
    out = Path(out_dir)
    df = pd.read_parquet(anonymized_path)
    released = contract if anonymize is None else release.released_contract(contract, anonymize)
    family, reason, cfg = train_config.resolve_family(cfg, released, df.columns, label)
    if prefix == "control.":  # flows.training sets the private model's family here
        reason = "the private model's, trained without DP (the audit's control)"
    stage.logger.info(prefix + "family %s: %s", family, reason)
    train_df, holdout_df = split_holdout(df, cfg.holdout_fraction, seed)
    holdout_path = write_parquet(holdout_df, out / "holdout.parquet")
    train_path = write_parquet(train_df, out / "train.parquet")  # members, canaries excluded
    text_cols = [c.name for c in contract.with_role(Role.TEXT) if c.name in train_df.columns]
    canaries_path = None
    likelihood = family == "causal_lm" or base.family_class(family).has_log_prob
    if audit is not None and audit.enabled and text_cols and likelihood:
        train_df, planted = plant_canaries(train_df, text_cols[0], audit, seed)
        canaries_path = str(write_json(planted, out / "canaries.json"))
    p = cfg.privacy
    stage.log_params({
        "train.family": family, "train.family_reason": reason[:500],
        "train.holdout_records": len(holdout_df), "privacy.enabled": p.enabled,
        "privacy.target_epsilon": p.target_epsilon, "privacy.max_grad_norm": p.max_grad_norm,
        "privacy.accountant": p.accountant, "privacy.secure_mode": p.secure_mode,
        "audit.canaries": 0 if canaries_path is None else audit.n_canaries * audit.canary_repeats,
    })
    if family == "causal_lm":
        trained = train_causal_lm(stage, train_df, released, cfg, seed, out, text_cols, resume,
                                  domain)
    else:
        trained = train_family(stage, family, train_df, released, cfg, seed, out, domain)
    return {**trained, "holdout_path": str(holdout_path), "train_path": str(train_path),
            "canaries_path": canaries_path, "family": family, "family_reason": reason,
            # The section the family ran with (auto's target included), for the control.
            "family_config": None if family == "causal_lm" else dict(cfg.section(family))}
