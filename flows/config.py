"""The one pipeline config: each stage's config class composed, with the demo data's contract.

Defaults live in code; a YAML file overrides them and ``--set key=value`` overrides that. A bad
value fails here, before any work, with the field's dotted name. The demo's contract and the
settings written for it (anonymize rules for its columns, its evaluation label) apply only while
no file brings its own ``contract:``; a file that does starts from the generic stage defaults.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.anonymize import AnonymizeConfig
from tasks.audit import AuditConfig
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.errors import ConfigError
from tasks.evaluate import EvaluateConfig
from tasks.generate import GenerateConfig
from tasks.ingest import IngestConfig
from tasks.promotion import PromotionConfig
from tasks.register import RegisterConfig
from tasks.train import TrainConfig
from tasks.validate import ValidateConfig

_EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
_CITIES = ("New York", "Los Angeles", "Chicago", "Houston", "Phoenix", "Philadelphia",
           "San Antonio", "San Diego", "Dallas", "Austin", "Seattle", "Denver", "Boston",
           "Atlanta", "Miami", "Nashville", "Minneapolis", "Detroit", "Providence", "Newark")
_PRODUCTS = ("Nimbus Phone", "Aurora Laptop", "Pulse Earbuds", "Echo Speaker", "Flux Smartwatch",
             "Orbit Tablet", "Vertex Monitor", "Zenith Router")


def demo_contract() -> DataContract:
    """The shipped support-ticket data: what each column is and what a valid value looks like."""
    c = ColumnSpec
    return DataContract(columns=(
        c(name="ticket_id", role=Role.ID, unique=True, regex=r"^T-\d{6}$"),
        c(name="customer_id", role=Role.ID, regex=r"^C-\d{5}$"),
        c(name="full_name", role=Role.DIRECT_IDENTIFIER),
        c(name="email", role=Role.DIRECT_IDENTIFIER, regex=_EMAIL),
        c(name="phone", role=Role.DIRECT_IDENTIFIER, regex=r"^\+?[\d\s().-]{7,}$"),
        # Customers are adults; tickets start with the service (2025).
        c(name="birth_date", dtype=DType.DATE, role=Role.QUASI_IDENTIFIER,
          earliest=date(1900, 1, 1), latest=date(2010, 12, 31)),
        c(name="postcode", role=Role.QUASI_IDENTIFIER, regex=r"^\d{5}$"),
        # The service area and the product catalog: public lists the data owner publishes, so
        # validation checks them and generation's grammar keeps to them, at no privacy cost.
        c(name="city", role=Role.CATEGORY, allowed=_CITIES),
        c(name="product", role=Role.CATEGORY, allowed=_PRODUCTS),
        c(name="channel", role=Role.CATEGORY,
          allowed=("email", "phone", "chat", "web_form", "social")),
        c(name="rating", dtype=DType.INTEGER, role=Role.NUMERIC, min=1, max=5),
        c(name="created_at", dtype=DType.DATETIME, role=Role.DATETIME,
          earliest=date(2025, 1, 1), latest=date(2026, 12, 31)),
        c(name="message", role=Role.TEXT),
    ))


def demo_anonymize() -> AnonymizeConfig:
    return AnonymizeConfig(
        # Exact timestamps single people out; the month keeps seasonality.
        operators={"created_at": "generalize"},
        generalize={"birth_date": "decade", "postcode": "prefix:3", "created_at": "month"},
        entities={"full_name": "PERSON", "email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER",
                  "ticket_id": "TICKET_ID", "customer_id": "CUSTOMER_ID"},
        # Order numbers link a message to a purchase record and so to a person.
        patterns={"ORDER_ID": r"\bORD-\d{5,}\b"},
        # A ticket names its customer: the person an erasure request is about.
        subject_column="customer_id",
    )


def _demo_evaluate() -> EvaluateConfig:
    # The demo's messages name the product: the train-on-synthetic task predicts it.
    return EvaluateConfig(utility_label="product")


def _demo_train() -> TrainConfig:
    # `make run` under 8 minutes on 2 cores with its non-private control (issue 13); measured
    # by CPU time in benchmarks/demo_families.py. The text part's DP-SGD cost grows with
    # records × epochs × the output layer (vocabulary): wordfreq's top 1,000 words still cover
    # 81 % of the demo's message words (3,000: 88 %), at a third of the per-sample gradients.
    # The AIM control, without the annealing that ends the private AIM after a few rounds, ran
    # all 24 rounds (a JAX compile each); the private one used 5 of them on the demo. Measured
    # (one thread, loaded machine): DP hybrid fit 282 CPU-s, its control 139; the control fits
    # its members (text NLL 2.35 vs 2.49 nats/token held out; DP 4.26 vs 4.26), so the audit
    # shows power: MIA AUC 0.533 vs 0.479 (95 % lower bound of the paired difference +0.037),
    # canary exposure median 3.5 vs 2.3 bits (p = 0.042).
    return TrainConfig(hybrid={"table": {"rounds": 8}, "text": {"vocab_k": 1000, "epochs": 4}})


# Sections whose defaults are written for the demo's columns: another contract gets the stage's
# own defaults instead (issue 12: the demo's created_at operator broke every other dataset).
DEMO_SECTIONS = {"anonymize": AnonymizeConfig, "evaluate": EvaluateConfig,
                 "train": TrainConfig}


class PipelineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str = "privgen"
    # Run outputs (raw copies, quarantine, anonymized data, checkpoints) go under this folder.
    workdir: Path = Path("runs")
    seed: int = 1234
    contract: DataContract = Field(default_factory=demo_contract)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    anonymize: AnonymizeConfig = Field(default_factory=demo_anonymize)
    train: TrainConfig = Field(default_factory=_demo_train)
    evaluate: EvaluateConfig = Field(default_factory=_demo_evaluate)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    # "register" would shadow BaseModel.register (from ABCMeta); the YAML key stays "register".
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
    promote: PromotionConfig = Field(default_factory=PromotionConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)

    def digest(self) -> str:
        """A stable hash of the effective config, recorded with every model version."""
        text = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        if node.get(p) is None:  # an optional section left unset, e.g. train.model.lora
            node[p] = {}
        node = node[p]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {p} is not a section")
    node[leaf] = value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: Path | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides (values as YAML)."""
    tree = PipelineConfig().model_dump(mode="json", by_alias=True)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        if "contract" in loaded:
            tree.update({k: cls().model_dump(mode="json") for k, cls in DEMO_SECTIONS.items()})
        tree = _merge(tree, loaded)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.epochs=3")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return config_from_tree(tree)


def config_from_tree(tree: dict) -> PipelineConfig:
    """Validate a config mapping (a merged file, or the config.json a run logged)."""
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]).replace("validate_", "validate").replace(
            "register_", "register")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        # pydantic prefixes a validator's own message with "Value error, ".
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"config field {field}: {msg}{more}") from None
