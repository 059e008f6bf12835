"""Evaluate: utility (held-out perplexity where the family has one, fidelity, marginal TVDs,
detection, train-on-synthetic) and the privacy audit of a trained model of any family.

The metrics are pure functions in ``tasks.fidelity``, ``tasks.fidelity_tables`` and
``tasks.evaluate_audit``; this stage draws the synthetic records they need, and reports.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from models import causal_lm
from models.base import Drawn, TableSpec
from tasks import audit_power, draw, fidelity, fidelity_tables, release, tracking
from tasks.anonymize import AnonymizeConfig
from tasks.audit import AuditConfig
from tasks.contract import DataContract, Role
from tasks.evaluate_audit import audit_generator, measured, plain_rows, record_line
from tasks.storage import write_json
from tasks.train import pad_batch


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # PII-filtered samples shown in the report.
    samples: int = Field(default=8, ge=0, le=1000)
    # Synthetic records drawn for fidelity, detection, train-on-synthetic and replay: enough
    # for column statistics to a few per cent, few enough that sampling (most of the stage's
    # time) keeps evaluation a fraction of training (benchmarks/audit_cost.py).
    synthetic_records: int = Field(default=200, ge=0, le=100_000)
    # Real training records the train-on-real baseline learns from (a sample: fitting cost
    # grows with it, and a few times the synthetic count is enough for a fair baseline).
    utility_real_records: int = Field(default=1000, ge=10)
    # The generation stage's default: small DP models need the help (text families).
    temperature: float = Field(default=0.8, gt=0.0)
    # Column the train-on-synthetic/test-on-real models predict; None: the first column with
    # the category role (the demo's city).
    utility_label: str | None = None


# The causal LM's perplexity on encoded sequences, for training tests and benchmarks; the
# stage asks the family for its own (``perplexity(rows)``).
@torch.no_grad()
def record_losses(model, sequences: list[list[int]], pad_id: int,
                  batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(mean next-token NLL, tokens) per sequence."""
    model.eval()
    losses, tokens = [], []
    for start in range(0, len(sequences), batch_size):
        ids, mask = pad_batch([torch.tensor(s) for s in sequences[start : start + batch_size]],
                              pad_id)
        losses.append(causal_lm.per_sample_loss(model, ids, mask).numpy())
        tokens.append(mask[:, 1:].sum(1).clamp(min=1).numpy())
    if not losses:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(losses), np.concatenate(tokens)


def perplexity(model, sequences: list[list[int]], pad_id: int, batch_size: int = 64) -> float:
    """exp of the mean next-token NLL over every held-out token (not a mean of per-record ppl)."""
    return _perplexity(*record_losses(model, sequences, pad_id, batch_size))


def _perplexity(losses: np.ndarray, tokens: np.ndarray) -> float:
    return math.exp(float((losses * tokens).sum() / max(tokens.sum(), 1)))


def spec_kinds(spec: TableSpec, contract: DataContract | None = None) -> dict[str, list[str]]:
    """The generated columns by how fidelity compares them, from the model's own spec;
    categorical columns with the category role in ``contract`` first (the default label)."""
    roles = {c.name: c.role for c in contract.columns} if contract is not None else {}
    categorical = sorted((f.name for f in spec.fields if f.kind == "categorical"),
                         key=lambda n: roles.get(n) is not Role.CATEGORY)
    return {"categorical": categorical,
            "numeric": [f.name for f in spec.fields if f.kind == "numeric"],
            "text": [f.name for f in spec.text]}


def _binary(frame: pd.DataFrame, label: str) -> bool:
    return frame[label].dropna().nunique() == 2


def _utility(real_train: pd.DataFrame, holdout: pd.DataFrame, synth: pd.DataFrame,
             kinds: dict[str, list[str]], cfg: EvaluateConfig, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"synthetic_records": len(synth)}
    metrics = ("fidelity", "marginals", "detection", "tstr", "tstr_auc")
    if synth.empty or holdout.empty:
        why = (f"no usable synthetic record of {cfg.synthetic_records} asked for"
               if synth.empty else "no held-out record")
        out |= dict.fromkeys(metrics)
        out["not_computed"] = dict.fromkeys(metrics, why)
        return out
    measured(out, "fidelity", lambda: fidelity.column_fidelity(holdout, synth, **kinds))
    structured = [*kinds["categorical"], *kinds["numeric"]]
    measured(out, "marginals", lambda: _marginals(holdout, synth, structured, kinds["numeric"]))
    measured(out, "detection", lambda: fidelity.detection_auc(holdout, synth, **kinds,
                                                              seed=seed))
    label = cfg.utility_label or next(iter(kinds["categorical"]), None)
    if label is not None:
        features = {**kinds, "categorical": [c for c in kinds["categorical"] if c != label]}
        real = real_train.sample(min(cfg.utility_real_records, len(real_train)),
                                 random_state=seed)
        measured(out, "tstr", lambda: fidelity.tstr(real, synth, holdout, label, **features,
                                                    seed=seed))
        out["tstr_label"] = label
        if _binary(holdout, label):
            # Gradient boosting's ROC AUC, the measure against the peers; trained on
            # the real sample by the same code for the ceiling.
            measured(out, "tstr_auc", lambda: {
                source: fidelity_tables.tstr_auc(frame, holdout, label, features["categorical"],
                                                 kinds["numeric"], seed=seed)
                for source, frame in (("synth", synth), ("real", real))})
    return out


def _marginals(real: pd.DataFrame, synth: pd.DataFrame, structured: list[str],
               numeric: list[str]) -> dict[str, Any]:
    """Mean 1-way and 2-way marginal TVDs, and each column's 1-way TVD (``tvd_1way.<col>``:
    the figures issue 13 compares across families on the demo)."""
    out: dict[str, Any] = {}
    for way in (1, 2):
        if len(structured) >= way:
            tvd = fidelity_tables.marginal_tvd(real, synth, structured, numeric, way=way)
            out[f"tvd_{way}way_mean"] = tvd["mean"]
            if way == 1:
                out["tvd_1way"] = tvd["per"]
    return out


def evaluate(trained: dict, contract: DataContract, cfg: EvaluateConfig, audit: AuditConfig,
             seed: int, anonymize: AnonymizeConfig | None = None) -> dict[str, Any]:
    """Utility and privacy audit of the model in ``trained["model_dir"]``, any family.

    ``contract``: the released contract; ``anonymize``: the run's anonymization settings,
    which say what forms the released columns take when the model folder carries no release
    rules of its own. Records are drawn by ``tasks.draw.draw_records``, the draw generation
    publishes through. Keys: ``perplexity`` (held-out, None where the family has none),
    ``usable_rate``, ``sample_rejections``, ``samples`` (a JSON line per record),
    ``utility``, ``audit`` (``tasks.evaluate_audit.audit_generator``), ``epsilon``,
    ``delta``, ``holdout_records``, ``family``."""
    gen, specs = draw.load(trained["model_dir"])
    if specs is None:  # a model saved before it carried its release rules
        released = contract if anonymize is None else release.released_contract(contract,
                                                                                anonymize)
        specs = release.checked(released.columns, gen.spec.names)
    names = gen.spec.names
    holdout = pd.read_parquet(trained["holdout_path"])[names]
    train_df = pd.read_parquet(trained["train_path"])[names]
    held_out_perplexity = getattr(gen, "perplexity", None)
    n = max(cfg.synthetic_records, cfg.samples)
    draw.set_sampling(gen, {"temperature": cfg.temperature})
    # Drawn exactly as generation draws what it publishes: records with PII, copied training
    # text or values outside the released contract are rejected (counted).
    drawn = draw.draw_records(gen, n, seed, specs) if n else Drawn()
    synth = gen.frame(drawn.records)
    kinds = spec_kinds(gen.spec, contract)
    result: dict[str, Any] = {
        "epsilon": trained["epsilon"], "delta": trained["delta"], "family": gen.family,
        # Only a likelihood model has one; register and the datasheet read the key.
        "perplexity": held_out_perplexity(holdout)
        if held_out_perplexity is not None and len(holdout) else None,
        "holdout_records": len(holdout),
        "samples": [record_line(r) for r in plain_rows(synth.head(cfg.samples))],
        # Records that pass every generation check, per record drawn: the share a user of
        # the model gets (gated by register.min_usable_rate).
        "usable_rate": len(synth) / drawn.generated if drawn.generated else math.nan,
        "sample_rejections": dict(drawn.rejected),
        "utility": _utility(train_df, holdout, synth.head(cfg.synthetic_records), kinds, cfg,
                            seed),
    }
    if audit.enabled:
        canaries = None
        if trained.get("canaries_path"):
            canaries = json.loads(Path(trained["canaries_path"]).read_text())
        result["audit"] = audit_generator(gen, train_df, holdout, synth, drawn.replayed,
                                          canaries, audit, float(trained["epsilon"]),
                                          trained["delta"], seed)
    return result


def _numbers(prefix: str, node: Any) -> dict[str, float]:
    """The finite numbers in a nested result, keyed by their dotted path (texts, lists left
    out): the MLflow metric names of an evaluation or an audit."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in
                _numbers(f"{prefix}.{key}", child).items()}
    if isinstance(node, bool | int | float) and math.isfinite(float(node)):
        return {prefix: float(node)}
    return {}


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of an evaluation as MLflow metric names (lists, texts, None and NaN left
    out: ``eval.perplexity`` only where the family has one)."""
    out = _numbers("eval", {k: result.get(k) for k in ("perplexity", "usable_rate")})
    out |= _numbers("eval", result["utility"])
    if "audit" in result:
        out |= _numbers("audit", {k: v for k, v in result["audit"].items() if k != "verdict"})
    return out


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(trained: dict, contract: DataContract, cfg: EvaluateConfig, audit: AuditConfig,
                  seed: int, out_dir: str, run_id: str, prefix: str = "",
                  anonymize: AnonymizeConfig | None = None) -> dict:
    """``prefix`` goes before every MLflow key (the non-private control shares the run)."""
    result = evaluate(trained, contract, cfg, audit, seed, anonymize)
    name = f"{prefix.replace('.', '_')}evaluation.json"
    write_json(result, Path(out_dir) / name)
    tracking.log_metrics(run_id, {prefix + k: v for k, v in flat_metrics(result).items()})
    if not prefix:
        tracking.log_text(run_id, "\n".join(result["samples"]) + "\n", "samples/samples.txt")
    tracking.log_dict(run_id, {k: v for k, v in result.items() if k != "samples"},
                      f"reports/{name}")
    verdict = result.get("audit", {}).get("verdict", {})
    ppl = result["perplexity"]
    get_run_logger().info(
        "%s%s model: held-out perplexity %s; audit %s", prefix, result["family"],
        "none (the family has no likelihood)" if ppl is None else f"{ppl:.3f}",
        ", ".join(f"{k} {v.split(':')[0]}" for k, v in verdict.items()) or "off")
    return {k: v for k, v in result.items() if k != "samples"}


_ROWS = (  # (label, path into an evaluation, format)
    ("ε spent", ("epsilon",), "{:.2f}"),
    ("held-out perplexity", ("perplexity",), "{:.3f}"),
    ("canary exposure, max (bits)", ("audit", "canary", "exposure_max"), "{:.2f}"),
    ("canary exposure, median (bits)", ("audit", "canary", "exposure_median"), "{:.2f}"),
    ("canary exposure, extrapolated max", ("audit", "canary", "exposure_fit_max"), "{:.1f}"),
    ("MIA AUC", ("audit", "mia_attack", "auc"), "{:.3f}"),
    ("MIA AUC ceiling under (ε, δ)-DP", ("audit", "mia", "auc_bound"), "{:.3f}"),
    ("MIA TPR at 0.1 % FPR", ("audit", "mia_attack", "tpr_at_fpr_0.001"), "{:.4f}"),
    ("MIA TPR at 1 % FPR", ("audit", "mia_attack", "tpr_at_fpr_0.01"), "{:.4f}"),
    ("DCR attack AUC", ("audit", "dcr_attack", "auc"), "{:.3f}"),
    ("DCR attack TPR at 1 % FPR", ("audit", "dcr_attack", "tpr_at_fpr_0.01"), "{:.4f}"),
    ("DCR: synthetic records nearer a member than held-out p5",
     ("audit", "dcr_attack", "closer_than_holdout_p5"), "{:.3f}"),
    ("DOMIAS AUC", ("audit", "domias_attack", "auc"), "{:.3f}"),
    ("DOMIAS TPR at 1 % FPR", ("audit", "domias_attack", "tpr_at_fpr_0.01"), "{:.4f}"),
    ("replay: 8-gram copy rate", ("audit", "replay", "ngram_copy_rate"), "{:.3f}"),
    ("replay: held-out 8-gram rate", ("audit", "replay", "holdout_ngram_rate"), "{:.3f}"),
    ("replay: unique training records copied", ("audit", "replay", "unique_copies"), "{:.0f}"),
    ("detection AUC (0.5 = indistinguishable)", ("utility", "detection", "auc"), "{:.3f}"),
    ("TSTR accuracy ratio (random forest)", ("utility", "tstr", "rf.ratio.accuracy"), "{:.3f}"),
    ("TSTR ROC AUC (gradient boosting)", ("utility", "tstr_auc", "synth", "roc_auc"),
     "{:.3f}"),
    ("TRTR ROC AUC (gradient boosting, ceiling)", ("utility", "tstr_auc", "real", "roc_auc"),
     "{:.3f}"),
    ("TVD mean over categories", ("utility", "fidelity", "tvd_mean"), "{:.3f}"),
    ("mean 1-way marginal TVD", ("utility", "marginals", "tvd_1way_mean"), "{:.3f}"),
    ("mean 2-way marginal TVD", ("utility", "marginals", "tvd_2way_mean"), "{:.3f}"),
)


def _get(result: dict, path: tuple[str, ...]) -> Any:
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def audit_table(columns: dict[str, dict]) -> str:
    """Markdown: one column per evaluated model, a row per metric and per audit gate."""
    names = list(columns)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, path, fmt in _ROWS:
        cells = [_get(r, path) for r in columns.values()]
        if all(c is None for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(
            "—" if c is None else fmt.format(c) for c in cells) + " |")
    missing = sorted({m for r in columns.values() for node in (("utility",), ("audit",))
                      for m in _get(r, (*node, "not_computed")) or {}})
    for metric in missing:  # too little data for it: said, never left out silently
        lines.append(f"| not computed: {metric} | " + " | ".join(
            (_get(r, ("utility", "not_computed", metric))
             or _get(r, ("audit", "not_computed", metric)) or "—").replace("|", "/")
            for r in columns.values()) + " |")
    gates = sorted({g for r in columns.values() for g in _get(r, ("audit", "verdict")) or {}})
    for gate in gates:
        lines.append(f"| audit gate: {gate} | " + " | ".join(
            (_get(r, ("audit", "verdict", gate)) or "—").replace("|", "/")
            for r in columns.values()) + " |")
    return "\n".join(lines) + "\n"


def exposure_figure(columns: dict[str, dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for i, result in enumerate(columns.values()):
        canary = _get(result, ("audit", "canary"))
        if canary:
            ax.scatter([i] * len(canary["exposure"]), canary["exposure"], alpha=0.7)
            ax.axhline(canary["resolution_bits"], color="grey", ls=":", lw=1)
    ax.set_xticks(range(len(columns)), list(columns))
    ax.set(ylabel="canary exposure (bits)", title="Canary exposure per model (gate: dotted)")
    fig.tight_layout()
    return fig


@task(name="audit-report", cache_policy=NO_CACHE)
def audit_report_task(columns: dict[str, dict], run_id: str, audit: AuditConfig) -> dict:
    """The models side by side (the candidate first, then its non-private control, if any) in
    MLflow and Prefect, with the paired tests of the audit's power. Returns ``markdown`` and
    ``power`` (None without a control)."""
    results = list(columns.values())
    power = None
    if len(results) == 2:
        power = audit_power.audit_power(results[0], results[1], alpha=audit.power_alpha)
        tracking.log_metrics(run_id, flat_power(power))
    table = audit_table(columns)
    markdown = ("# Evaluation and privacy audit\n\nThe non-private control is the same family "
                "trained on the same data (and canaries, where planted); the audit has power "
                "when it flags the control.\n\n" + table)
    if power is not None:
        markdown += f"\n**Power:** {power['summary']}.\n"
    tracking.log_text(run_id, markdown, "reports/audit.md")
    tracking.log_dict(run_id, {"models": columns, "power": power}, "reports/audit.json")
    if any(_get(r, ("audit", "canary")) for r in results):  # canaries: likelihood families
        figure = exposure_figure(columns)
        tracking.log_figure(run_id, figure, "reports/canary_exposure.png")
        import matplotlib.pyplot as plt  # after exposure_figure chose the headless backend

        plt.close(figure)
    create_markdown_artifact(key="audit-report", markdown=markdown)
    if power is not None:
        log = get_run_logger()
        (log.info if power["has_power"] else log.warning)("%s", power["summary"])
    return {"markdown": markdown, "power": power}


def flat_power(power: dict) -> dict[str, float]:
    """The power comparison as MLflow metrics (``audit.power.*``)."""
    return _numbers("audit.power", {k: power[k] for k in ("has_power", "canary",
                                                          *audit_power.ATTACKS) if k in power})
