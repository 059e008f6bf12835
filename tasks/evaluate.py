"""Evaluate: utility (held-out perplexity, fidelity, detection, train-on-synthetic) and the privacy
audit (canary exposure, membership inference against the DP bound, replay) of a trained model.

The metrics themselves are pure functions in ``tasks.fidelity`` and ``tasks.audit``; this stage
draws the synthetic records and the per-record losses they need, and reports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
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
from models.pyfunc import SyntheticRecordsModel
from tasks import audit as privacy_audit
from tasks import audit_power, fidelity, release, tracking
from tasks.anonymize import AnonymizeConfig
from tasks.audit import AuditConfig, Canaries
from tasks.contract import DataContract, DType, Role
from tasks.errors import InputError
from tasks.generate import GenerateConfig, draw
from tasks.storage import write_json
from tasks.train import encode, pad_batch


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # PII-filtered samples shown in the report.
    samples: int = Field(default=8, ge=0, le=1000)
    batch_size: int = Field(default=64, ge=1)
    # Synthetic records drawn for fidelity, detection, train-on-synthetic and replay: enough
    # for column statistics to a few per cent, few enough that sampling (most of the stage's
    # time) keeps evaluation a fraction of training (benchmarks/audit_cost.py).
    synthetic_records: int = Field(default=200, ge=0, le=100_000)
    # Real training records the train-on-real baseline learns from (a sample: fitting cost
    # grows with it, and a few times the synthetic count is enough for a fair baseline).
    utility_real_records: int = Field(default=1000, ge=10)
    # The generation stage's default: small DP models need the help.
    temperature: float = Field(default=0.8, gt=0.0)
    # Column the train-on-synthetic/test-on-real models predict; None: the first column with
    # the category role (the demo's city).
    utility_label: str | None = None


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


def column_kinds(contract: DataContract, fields: tuple[str, ...]) -> dict[str, list[str]]:
    """The generated columns by how fidelity compares them."""
    specs = [c for c in contract.columns if c.name in fields]
    numeric = [c.name for c in specs if c.dtype in (DType.INTEGER, DType.FLOAT)
               and c.role is not Role.TEXT]
    text = [c.name for c in specs if c.role is Role.TEXT]
    # Category columns first: the default label to predict is the first of them.
    categorical = sorted((c.name for c in specs if c.name not in numeric and c.name not in text),
                         key=lambda n: next(c.role is not Role.CATEGORY for c in specs
                                            if c.name == n))
    return {"categorical": categorical, "numeric": numeric, "text": text}


def _measured(out: dict[str, Any], name: str, compute: Callable[[], Any]) -> None:
    """``out[name]`` = ``compute()``, or None with the reason under ``out["not_computed"]``
    when the data is too small for it: a metric that cannot be computed on small data is
    reported as such, never a crash after training has spent the budget (issue 12)."""
    try:
        out[name] = compute()
    except (InputError, ValueError) as exc:  # their messages name counts and columns only
        out[name] = None
        out.setdefault("not_computed", {})[name] = str(exc)


def _utility(real_train: pd.DataFrame, holdout: pd.DataFrame, synth: pd.DataFrame,
             kinds: dict[str, list[str]], cfg: EvaluateConfig, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"synthetic_records": len(synth)}
    if synth.empty or holdout.empty:
        why = (f"no usable synthetic record of {cfg.synthetic_records} asked for"
               if synth.empty else "no held-out record")
        out["fidelity"] = out["detection"] = out["tstr"] = None
        out["not_computed"] = dict.fromkeys(("fidelity", "detection", "tstr"), why)
        return out
    _measured(out, "fidelity", lambda: fidelity.column_fidelity(holdout, synth, **kinds))
    _measured(out, "detection", lambda: fidelity.detection_auc(holdout, synth, **kinds,
                                                               seed=seed))
    label = cfg.utility_label or next(iter(kinds["categorical"]), None)
    if label is not None:
        features = {**kinds, "categorical": [c for c in kinds["categorical"] if c != label]}
        real = real_train.sample(min(cfg.utility_real_records, len(real_train)),
                                 random_state=seed)
        _measured(out, "tstr", lambda: fidelity.tstr(real, synth, holdout, label, **features,
                                                     seed=seed))
        out["tstr_label"] = label
    return out


def _audit(model, tokenizer, codec, train_df: pd.DataFrame, holdout: pd.DataFrame,
           holdout_sequences: list[list[int]], holdout_losses: np.ndarray, synth: pd.DataFrame,
           replayed: list[dict], canaries: dict | None,
           text: list[str], audit: AuditConfig, epsilon: float, delta: float, block: int,
           seed: int) -> dict[str, Any]:
    """``holdout_sequences``, ``holdout_losses``: ``holdout`` encoded and its per-record losses,
    the non-members."""
    rng = np.random.default_rng([seed, 0xA0D17])
    results: dict[str, Any] = {}
    members = encode(train_df.sample(min(audit.mia_records, len(train_df)), random_state=seed),
                     codec, tokenizer, block)
    loss_m, _ = record_losses(model, members, tokenizer.pad_id)
    loss_n = holdout_losses[: audit.mia_records]
    _measured(results, "mia_attack", lambda: privacy_audit.loss_threshold_mia(
        loss_m, loss_n, audit.mia_fprs))
    if results["mia_attack"] is not None:
        # Kept so that the non-private control's attack can be compared record by record.
        results["mia_scores"] = {
            "members": loss_m.tolist(), "nonmembers": loss_n.tolist(),
            "records": audit_power.pairing_digest(members
                                                  + holdout_sequences[: audit.mia_records])}
        results["mia"] = privacy_audit.mia_within_bound(
            results["mia_attack"], epsilon, delta, fprs=audit.mia_fprs,
            confidence=audit.mia_confidence)
    if canaries is not None:
        planted = Canaries(tuple(canaries["secrets"]), canaries["template"], canaries["digits"])
        base, column = canaries["base_row"], canaries["text_column"]

        def score(texts: list[str]) -> np.ndarray:  # one canary record per candidate secret
            rows = pd.DataFrame([{**base, column: t} for t in texts])
            return record_losses(model, encode(rows, codec, tokenizer, block),
                                 tokenizer.pad_id)[0]

        results["canary"] = privacy_audit.canary_exposures(score, planted, audit.n_candidates,
                                                           rng)
        results["canary"]["repeats"] = canaries["repeats"]
        results["canary"]["planted"] = audit_power.pairing_digest(planted.texts)
    if text and not synth.empty:
        column = text[0]
        _measured(results, "replay", lambda: privacy_audit.replay_stats(
            synth[column].tolist() + [r.get(column) for r in replayed],
            train_df[column].tolist(), holdout[column].tolist(), n=audit.replay_ngram))
        if results["replay"] is not None:
            results["replay"]["filtered"] = float(len(replayed))
    results["verdict"] = privacy_audit.audit_verdict(results, audit)
    # A test that could not run is no pass: its gate fails, saying why.
    for name, why in results.get("not_computed", {}).items():
        gate = "mia" if name == "mia_attack" else name
        results["verdict"][gate] = f"fail: not computed ({why})"
    return results


def evaluate(trained: dict, contract: DataContract, cfg: EvaluateConfig, audit: AuditConfig,
             seed: int, anonymize: AnonymizeConfig | None = None) -> dict[str, Any]:
    """``anonymize``: the run's anonymization settings, which say what forms the released
    columns take (the generation grammar holds samples to them)."""
    model_dir = Path(trained["model_dir"])
    generator, _ = SyntheticRecordsModel.from_dir(model_dir)
    model, meta, codec, tokenizer = (generator.model, generator.meta, generator.codec,
                                     generator.tokenizer)
    block = meta["model_config"]["block_size"]
    holdout = pd.read_parquet(trained["holdout_path"])
    train_df = pd.read_parquet(trained["train_path"])
    # Once for the held-out perplexity and the membership test's non-members.
    held = encode(holdout, codec, tokenizer, block)
    held_losses, held_tokens = record_losses(model, held, tokenizer.pad_id, cfg.batch_size)
    ppl = _perplexity(held_losses, held_tokens)
    n = max(cfg.synthetic_records, cfg.samples)
    # Drawn exactly as the generation stage draws what it publishes: the grammar holds the
    # released contract, and records with PII or copied training text are rejected (counted).
    fields = release.read(generator.release)
    if fields is None:  # a model saved before it carried its release rules
        fields = list(contract.columns if anonymize is None else
                      release.released_contract(contract, anonymize).columns)
    released = DataContract(columns=tuple(fields))
    drawn = draw(generator, n, seed, GenerateConfig(temperature=cfg.temperature),
                 release.checked(fields, codec.fields)) if n else None
    synth = codec.frame(drawn.records if drawn is not None else [])
    # Already through the generation filters: no PII, no copied training text.
    shown = [codec.encode(r) for r in synth.head(cfg.samples).to_dict("records")]
    # By the released types: bands of a generalized age are categories, not numbers.
    kinds = column_kinds(released, codec.fields)
    result: dict[str, Any] = {
        "epsilon": trained["epsilon"], "delta": trained["delta"],
        "perplexity": ppl, "holdout_records": len(holdout), "samples": shown,
        # Records that parse and pass every generation check, per record drawn: the share a
        # user of the model gets (gated by register.min_usable_rate).
        "usable_rate": (len(synth) / drawn.generated) if drawn and drawn.generated
        else math.nan,
        "sample_rejections": dict(drawn.rejected) if drawn is not None else {},
        "utility": _utility(train_df, holdout, synth.head(cfg.synthetic_records), kinds, cfg,
                            seed),
    }
    if audit.enabled:
        canaries = None
        if trained.get("canaries_path"):
            canaries = json.loads(Path(trained["canaries_path"]).read_text())
        result["audit"] = _audit(model, tokenizer, codec, train_df, holdout, held, held_losses,
                                 synth, drawn.replayed if drawn is not None else [], canaries,
                                 kinds["text"], audit, trained["epsilon"], trained["delta"],
                                 block, seed)
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
    """The numbers of an evaluation as MLflow metric names (lists and texts left out)."""
    out = {"eval.perplexity": result["perplexity"],
           "eval.usable_rate": result["usable_rate"], **_numbers(
               "eval", result["utility"])}
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
    get_run_logger().info("%sheld-out perplexity %.3f; audit %s", prefix, result["perplexity"],
                          ", ".join(f"{k} {v.split(':')[0]}" for k, v in verdict.items())
                          or "off")
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
    ("replay: 8-gram copy rate", ("audit", "replay", "ngram_copy_rate"), "{:.3f}"),
    ("replay: held-out 8-gram rate", ("audit", "replay", "holdout_ngram_rate"), "{:.3f}"),
    ("replay: unique training records copied", ("audit", "replay", "unique_copies"), "{:.0f}"),
    ("detection AUC (0.5 = indistinguishable)", ("utility", "detection", "auc"), "{:.3f}"),
    ("TSTR accuracy ratio (random forest)", ("utility", "tstr", "rf.ratio.accuracy"), "{:.3f}"),
    ("TVD mean over categories", ("utility", "fidelity", "tvd_mean"), "{:.3f}"),
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
    markdown = ("# Evaluation and privacy audit\n\nThe non-private control is trained on the "
                "same data and canaries; the audit has power when it flags the control.\n\n"
                + table)
    if power is not None:
        markdown += f"\n**Power:** {power['summary']}.\n"
    tracking.log_text(run_id, markdown, "reports/audit.md")
    tracking.log_dict(run_id, {"models": columns, "power": power}, "reports/audit.json")
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
    return _numbers("audit.power", {k: power[k] for k in ("has_power", "canary", "mia")
                                    if k in power})
