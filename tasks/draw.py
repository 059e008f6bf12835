"""The one draw of released records from any generator family: ``Generator.draw`` with
privgen's checks (the PII gate on free text, the release rules, copied training text), the
shard plan and the sampling settings. Batch generation, evaluation and the MLflow pyfunc all
call ``draw_records``, so a model folder, ``n`` and a seed give the same records on every road.

Imports neither prefect nor mlflow."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models import base
from models.records import RELEASE_FILE
from tasks import pii, release
from tasks.contract import ColumnSpec, Role
from tasks.errors import GenerationError

# The stage's sampling defaults, shared by `privgen generate` and the pyfunc's predict.
# Below 1 a temperature trades diversity for well-formed values; small DP models need the help.
SAMPLING = {"temperature": 0.8, "top_k": 0, "top_p": 1.0, "batch_size": 128}
# Records per shard: the unit of resumption and parallel work, and of the seeds.
SHARD_SIZE = 1000


@dataclass(frozen=True)
class Shard:
    index: int
    n: int
    seed: int


def shard_plan(n: int, shard_size: int, seed: int) -> list[Shard]:
    """Deterministic shards: the same request always maps shard i to the same size and seed."""
    return [Shard(i, min(shard_size, n - start), seed * 1_000_003 + i)
            for i, start in enumerate(range(0, n, shard_size))]


def has_pii(row: Mapping, text_fields: Collection[str] = ()) -> bool:
    """privgen's one PII check on generated values, the anonymize stage's output gate: free
    text (``text_fields``) with every pattern kind the gate knows (``pii.gate_spans``), other
    values with the checksum-grade patterns (a category may look like a postcode)."""
    return any(isinstance(v, str) and (pii.gate_spans(v) if k in text_fields
                                       else pii.pattern_spans(v)) for k, v in row.items())


def load(model_dir: str | Path) -> tuple[base.Generator, list[ColumnSpec] | None]:
    """(the generator saved in ``model_dir``, the released specs it carries or None).

    A causal-LM folder written before ``family.json`` loads through its own metadata."""
    model_dir = Path(model_dir)
    if base.is_saved_generator(model_dir):
        gen = base.load(model_dir)
    else:
        from models.causal_lm_family import CausalLM

        gen = CausalLM.from_folder(model_dir)
    return gen, release_specs(model_dir)


def release_specs(model_dir: str | Path) -> list[ColumnSpec] | None:
    """The released specs in a model folder's ``release.json``; None when it has none."""
    path = Path(model_dir) / RELEASE_FILE
    return release.read(json.loads(path.read_text())) if path.is_file() else None


def text_fields(gen: base.Generator, specs: Iterable[ColumnSpec] = ()) -> set[str]:
    """The free-text fields of ``gen``'s records: by its spec and by the released roles."""
    names = {f.name for f in gen.spec.text} if gen.spec is not None else set()
    return names | {s.name for s in specs if s.role is Role.TEXT}


def set_sampling(gen: base.Generator, settings: Mapping | None = None) -> None:
    """``gen.sampling`` = the stage defaults overridden by ``settings`` (None values ignored)."""
    gen.sampling = {**SAMPLING, **{k: v for k, v in (settings or {}).items()
                                   if k in SAMPLING and v is not None}}


def draw_records(gen: base.Generator, n: int, seed: int, specs: Iterable[ColumnSpec] | None,
                 conditions: Mapping[str, str] | None = None) -> base.Drawn:
    """``n`` records from ``gen`` that pass its own check (copied training text: "replay"),
    the PII gate ("pii") and the release rules of ``specs`` ("contract:<column>"), drawn by
    ``Generator.draw`` with ``gen.sampling`` as set (``set_sampling``). A raw output that made
    no record is quarantined only when it holds no PII and no training text. Deterministic in
    (model, n, seed, conditions, sampling)."""
    specs = list(specs or [])
    texts = text_fields(gen, specs)

    def check(row: dict) -> str | None:
        if has_pii(row, texts):
            return "pii"
        # A missing value is the family's to emit (nullable fields); 3.0 is the integer 3.
        present = {k: int(v) if isinstance(v, float) and v.is_integer() else v
                   for k, v in row.items() if not _missing(v)}
        return release.violation(present, specs)

    def keep_raw(raw: dict) -> str | None:
        if has_pii(raw, ("text",)):
            return "pii"
        # The family's own check sees the raw line as each of its text fields.
        return gen.check({name: raw["text"] for name in texts} or raw)

    return gen.draw(n, seed, dict(conditions or {}), check=check, keep_raw=keep_raw)


def draw_plan(gen: base.Generator, n: int, seed: int, specs: Iterable[ColumnSpec] | None,
              conditions: Mapping[str, str] | None = None,
              shard_size: int = SHARD_SIZE) -> list[dict]:
    """Every shard of ``shard_plan(n, shard_size, seed)`` drawn in order, as `privgen
    generate` draws them; GenerationError when a shard falls short."""
    records = []
    for shard in shard_plan(n, shard_size, seed):
        drawn = draw_records(gen, shard.n, shard.seed, specs, conditions)
        short(drawn, shard.n, f"shard {shard.index}")
        records.extend(drawn.records)
    return records


def short(drawn: base.Drawn, n: int, where: str) -> None:
    """GenerationError, with the commonest rejection's advice, when ``drawn`` holds < n."""
    if len(drawn.records) >= n:
        return
    reasons = ", ".join(f"{k}: {v}" for k, v in drawn.rejected.most_common()) or "none"
    raise GenerationError(
        f"the model produced only {len(drawn.records)} usable records of {n} in {where} after "
        f"{drawn.generated} draws (rejected: {reasons}); {advice(drawn.rejected)}")


def advice(rejected) -> str:
    """What to do about the commonest rejection, by its cause (not always "train longer")."""
    if not rejected:
        return "no record was drawn; raise generate.n"
    reason = rejected.most_common(1)[0][0]
    kind, _, column = reason.partition(":")
    if reason.startswith(("parse:integer:", "parse:fields")):
        return (f"most lines do not fit the model's record layout ({reason}): the model was "
                "trained on another layout or not enough; retrain it with this privgen")
    if kind == "parse":
        return (f"most lines leave a field empty or malformed ({reason}): train longer or "
                "lower generate.temperature")
    if kind == "contract":
        return (f"most records hold a {column} value outside the released contract: its form "
                f"is outside what the grammar enforces; declare {column}'s allowed values or "
                "a simpler regex in the contract, then retrain")
    if kind == "pii":
        return ("most records look like personal data to the PII scanner: check the "
                "anonymize settings of the training run before using this model")
    if kind == "condition":
        return "the model rarely produces the conditioned value; condition on a commoner one"
    if kind == "replay":
        return ("most records copy training text: the model memorized its data; train with a "
                "lower ε or more data")
    return (f"most candidates were rejected as {reason}: the model is undertrained for this "
            "data; train longer or with more records")


def check_condition(condition: Mapping[str, str], gen: base.Generator,
                    specs: Iterable[ColumnSpec] | None) -> None:
    """Refuse, before any sampling, a condition the model cannot honour: a column that is not
    one of its structured fields, a value outside its released values or form, personal data,
    or (causal LM) text its codec cannot write or a tokenizer that cannot force it."""
    specs = {s.name: s for s in specs or []}
    structured = [f.name for f in gen.spec.structured] if gen.spec is not None else []
    codec, tokenizer = getattr(gen, "codec", None), getattr(gen, "tokenizer", None)
    for column, value in condition.items():
        where = f"generate.condition {column}={value!r}"
        if column not in structured:
            raise GenerationError(f"generate.condition: {column!r} is not a structured column "
                                  f"of this model; use one of {', '.join(structured)}")
        field = gen.spec.field(column)
        if tokenizer is not None and not tokenizer.byte_level:
            raise GenerationError(f"{where}: conditioning needs a model with privgen's byte "
                                  "tokenizer; this one was fine-tuned with its own")
        if not value or (codec is not None and codec.field_text(column, value) != value):
            raise GenerationError(f"{where}: give non-empty text without '|', line breaks or "
                                  "repeated spaces")
        if field.kind == "numeric" and field.integer and not str(value).lstrip("-").isdigit():
            raise GenerationError(f"{where}: {column} holds whole numbers")
        if has_pii({column: value}):
            raise GenerationError(f"{where}: the value looks like personal data; condition on "
                                  "a category, not a person")
        allowed = field.values if field.kind == "categorical" else None
        if (column in specs and release.violation({column: value}, [specs[column]])) or (
                allowed is not None and value not in allowed):
            allowed = allowed or (specs[column].allowed if column in specs else None)
            raise GenerationError(f"{where}: not allowed by the training data's contract"
                                  + (f"; allowed: {', '.join(allowed)}" if allowed else ""))
        if field.kind == "numeric" and not _within(value, field):
            raise GenerationError(f"{where}: outside {column}'s released range "
                                  f"[{field.low:g}, {field.high:g}]")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or \
        value is pd.NA


def _within(value: str, field: base.FieldSpec) -> bool:
    try:
        x = float(value)
    except ValueError:
        return False
    return (field.low is None or x >= field.low) and (field.high is None or x <= field.high)
