"""Register: log the model to MLflow, register a version with its privacy tags, apply the gates.

Every version becomes ``challenger``; it becomes ``champion`` only when the gates in the config
pass (ε within budget, a private model, perplexity under the threshold).
"""

from __future__ import annotations

import json
import subprocess
from importlib import metadata
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

import models
import tasks
from models.base import FAMILY_FILE
from models.pyfunc import ARTIFACT, GeneratorModel, pip_requirements
from tasks import datasheet, tracking
from tasks.draw import SAMPLING, SHARD_SIZE
from tasks.errors import RegistryError
from tasks.gates import (
    RegisterConfig,
    audit_gates,
    audit_summary,
    gates,
)
from tasks.promotion import PromotionConfig, promote

# The pyfunc's params and their defaults: the generation stage's (tasks.draw), so predict
# without params draws what `privgen generate` draws.
SAMPLING_PARAMS = {**SAMPLING, "shard_size": SHARD_SIZE}


def code_version() -> str:
    """The git commit of the code that trained the model, or the package version."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(models.__file__).parent)
        if sha.returncode == 0 and sha.stdout.strip():
            return sha.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return metadata.version("privgen")


def version_tags(train: dict, evaluation: dict, dataset_digest: str, config_digest: str,
                 verdicts: dict[str, str]) -> dict[str, str]:
    audit = evaluation.get("audit", {})
    summary = {k: _get_number(audit, *path) for k, path in (
        ("audit.canary_exposure_max", ("canary", "exposure_max")),
        ("audit.mia_auc", ("mia_attack", "auc")),
        ("audit.ngram_copy_rate", ("replay", "ngram_copy_rate")))}
    return {
        "audit.verdict": audit_summary(verdicts),
        **{k: f"{v:.4g}" for k, v in summary.items() if v is not None},
        "privacy.epsilon": f"{train['epsilon']:.6g}", "privacy.delta": f"{train['delta']:.6g}",
        "privacy.accountant": train["accountant"], "privacy.private": str(train["private"]),
        "privacy.noise_multiplier": f"{train['noise_multiplier']:.6g}",
        "privacy.sample_rate": f"{train['sample_rate']:.6g}",
        "privacy.steps": str(train["steps"]), "privacy.unit": "record",
        "train.family": train.get("family", "causal_lm"),
        "train.family_reason": train.get("family_reason", "")[:5000],
        "train.mechanism": train.get("mechanism", "dp-sgd" if train["private"] else "sgd"),
        **({"eval.perplexity": f"{evaluation['perplexity']:.6g}"}
           if evaluation.get("perplexity") is not None else {}),
        **({"eval.usable_rate": f"{evaluation['usable_rate']:.6g}"}
           if evaluation.get("usable_rate") is not None else {}),
        "dataset.digest": dataset_digest, "config.hash": config_digest,
        "code.version": code_version(),
        "policy.verdict": "pass" if all(v == "pass" for v in verdicts.values()) else "fail",
        **{f"gate.{k}": v for k, v in verdicts.items()},
    }


def _get_number(node: dict, *path: str) -> float | None:
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if isinstance(node, int | float) else None


def log_model(run_id: str, model_dir: str, name: str) -> str:
    """Log the pyfunc with signature and input example, register it as a new version of
    ``name`` and return that version.

    Registered through the client rather than ``registered_model_name`` because the fluent
    path prints to stderr, over the CLI's progress display."""
    example = pd.DataFrame({"n": [2], "seed": [0]})
    wrapper, _ = GeneratorModel.from_dir(model_dir)
    # The output schema from the model's own columns and types, not from a draw: a model that
    # writes few usable records is registered (and gated) rather than failing here.
    signature = infer_signature(example, wrapper.output_frame([]), SAMPLING_PARAMS)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            # Models from code, not a pickled instance: loading a version never unpickles.
            name="model", python_model=str(Path(models.__file__).parent / "pyfunc_code.py"),
            artifacts={ARTIFACT: model_dir}, signature=signature, input_example=example,
            # The served model draws through tasks.draw (PII gate, release rules) as the
            # generation stage does, so it ships tasks/ beside models/.
            code_paths=[str(Path(models.__file__).parent), str(Path(tasks.__file__).parent)],
            pip_requirements=pip_requirements(),
        )
    client = tracking.client()
    try:
        client.create_registered_model(name, description="privgen synthetic-data generator")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, source=info.model_uri, run_id=run_id,
                                     model_id=info.model_id)
    return str(mv.version)


@task(name="register", cache_policy=NO_CACHE)
def register_task(model_dir: str, train: dict, evaluation: dict, dataset_digest: str,
                  config_digest: str, cfg: RegisterConfig, policy: PromotionConfig,
                  run_id: str, lineage: dict | None = None, privacy: dict | None = None,
                  control: dict | None = None, power: dict | None = None,
                  extra_verdicts: dict[str, str] | None = None) -> dict:
    """``lineage`` (source, validate and anonymize results), ``privacy`` (the training privacy
    config), ``control`` (the non-private control's evaluation) and ``power`` (the paired
    comparison with it, ``tasks.audit_power``) go into the datasheet; ``extra_verdicts``: a
    stage's own gates (the image detector's), applied as the others."""
    logger = get_run_logger()
    version = log_model(run_id, model_dir, cfg.model_name)
    verdicts = {**gates(train, evaluation, cfg), **audit_gates(evaluation, cfg),
                **(extra_verdicts or {})}
    tags = version_tags(train, evaluation, dataset_digest, config_digest, verdicts)
    if power is not None:
        tags["audit.power"] = "shown" if power["has_power"] else "not shown"
    client = tracking.client()
    for k, v in tags.items():
        client.set_model_version_tag(cfg.model_name, version, k, v)
    client.set_registered_model_alias(cfg.model_name, "challenger", version)
    promoted = False
    if tags["policy.verdict"] == "pass" and policy.require_approval:
        logger.info("gates passed; %s version %s waits for ops approval: privgen promote %s %s",
                    cfg.model_name, version, cfg.model_name, version)
    elif tags["policy.verdict"] == "pass":
        # Through the ops path, so the history, the lock and the mirrored stages apply and a
        # challenger worse than the current champion stays a challenger.
        try:
            promote(cfg.model_name, version, cfg, policy, who="training-flow",
                    reason="gates passed at registration")
            promoted = True
        except RegistryError as refused:
            verdicts["champion"] = f"fail: {refused}"
            logger.warning("not promoted: %s", refused)
    else:
        failed = "; ".join(f"gate {g} failed ({v.removeprefix('fail: ')})"
                           for g, v in verdicts.items() if v != "pass")
        logger.warning("not promoted: %s", failed)
    sheet = datasheet.build(
        name=cfg.model_name, version=version, train=train, evaluation=evaluation,
        verdicts=verdicts, privacy=privacy or {}, control=control, power=power,
        model=json.loads((Path(model_dir) / FAMILY_FILE).read_text()),
        lineage={**(lineage or {}), "source_digest": dataset_digest,
                 "config_digest": config_digest, "code_version": tags["code.version"]})
    tracking.log_dict(run_id, sheet, "datasheet/datasheet.json")
    tracking.log_text(run_id, datasheet.markdown(sheet), "datasheet/datasheet.md")
    client.set_model_version_tag(cfg.model_name, version, "datasheet",
                                 f"runs:/{run_id}/datasheet/datasheet.md")
    tracking.set_tags(run_id, {"privgen.model_version": f"{cfg.model_name}/{version}",
                               "privgen.promoted": promoted})
    rows = "\n".join(f"| {k} | {v} |" for k, v in verdicts.items())
    create_markdown_artifact(key="register-report", markdown=(
        f"# Registration\n\n`{cfg.model_name}` version {version}: alias `challenger`"
        f"{' and `champion`' if promoted else ''}\n\n| gate | verdict |\n|---|---|\n{rows}\n"))
    logger.info("registered %s version %s (%s)", cfg.model_name, version,
                "champion" if promoted else "challenger only")
    return {"name": cfg.model_name, "version": version, "promoted": promoted,
            "verdicts": verdicts}
