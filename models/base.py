"""One interface for every generator family: fit under a privacy budget, sample, save, load.

A family is a subclass of ``Generator`` registered in ``FAMILIES`` (name → ``module:Class``).
``Generator.draw`` is the only draw loop: batch generation, evaluation, the MLflow pyfunc and
``mlflow models serve`` all call it, so a model folder and a seed give the same records on every
road. Families only propose candidate rows (``_propose``); the loop checks them, counts every
rejection by reason and draws the shortfall in further rounds with their own seeds.

A saved model folder holds ``family.json`` (family, its config, the table spec it was trained
under, the fit result) beside the family's own weights (safetensors or JSON, never pickle).
"""

from __future__ import annotations

import importlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from models.images import image_reason

FAMILY_FILE = "family.json"

# name → "module:Class"; imported on first use so a family's heavy dependencies (JAX for the
# marginal families, transformers for the causal LM) load only when that family is used.
FAMILIES: dict[str, str] = {
    "aim": "models.marginal:AIM",
    "mst": "models.marginal:MST",
    "tvae": "models.tvae:TVAE",
    "dpctgan": "models.dpctgan:DPCTGAN",
    "dplstm": "models.dplstm:DPLSTM",
    "causal_lm": "models.causal_lm_family:CausalLM",
    "hybrid": "models.hybrid:Hybrid",
    "dcgan": "models.dcgan:DCGAN",
    "convvae": "models.convvae:ConvVAE",
}
TABLE_FAMILIES = ("aim", "mst", "tvae", "dpctgan")
TEXT_FAMILIES = ("dplstm", "causal_lm")
IMAGE_FAMILIES = ("dcgan", "convvae")

# Each round draws the shortfall with its own seed; a model this bad after 8 is not usable.
MAX_ROUNDS = 8
# Below this share of candidates passing the checks a model is refused after its first round.
MIN_ACCEPTANCE = 0.05


@dataclass(frozen=True)
class FieldSpec:
    """One generated column as the released contract allows it.

    ``kind``: "categorical" (``values``: every value it may take, public or paid for),
    "numeric" (``low``/``high``: inclusive bounds, public or paid for; ``integer``: whole
    numbers), "text" (free text, for the text families) or "image" (a uint8 array of
    ``shape`` (H, W, C), C 1 grey or 3 RGB, for the image families; ``models.images``)."""

    name: str
    kind: Literal["categorical", "numeric", "text", "image"]
    values: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    integer: bool = False
    nullable: bool = False
    shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class TableSpec:
    """The columns a generator learns and emits, in order (free text last)."""

    fields: tuple[FieldSpec, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def structured(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind not in ("text", "image")]

    @property
    def text(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == "text"]

    @property
    def images(self) -> list[FieldSpec]:
        return [f for f in self.fields if f.kind == "image"]

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    def to_dict(self) -> dict:
        return {"fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, d: Mapping) -> TableSpec:
        return cls(tuple(FieldSpec(**{**f, "values": None if f.get("values") is None
                                      else tuple(f["values"]),
                                      "shape": None if f.get("shape") is None
                                      else tuple(f["shape"])}) for f in d["fields"]))


@dataclass(frozen=True)
class Budget:
    """What a family may spend. ``epsilon``: the run's total target, which the family's own
    mechanism composed with ``prior`` (mechanisms already run on the same records, e.g. the
    domain stage's Gaussian releases, as ``models.accounting`` events) must stay within, at
    ``delta``. ``enabled`` false: a non-private fit (the audit's control), ε = ∞."""

    enabled: bool = True
    epsilon: float = 8.0
    delta: float = 1e-5
    prior: tuple[dict, ...] = ()
    accountant: Literal["prv", "rdp"] = "prv"
    max_grad_norm: float = 1.0
    secure_mode: bool = False


@dataclass
class FitResult:
    """What a fit spent and how. ``events``: the mechanisms run on the private records, as
    ``models.accounting`` events (DP-SGD: σ, sample rate q, steps; marginal measurements: a
    Gaussian of noise multiplier σ; selections: ρ-zCDP), so one accountant can compose them
    with everything else run on the same people. ``params``: the mechanism's settings for
    MLflow (σ/q/steps, ρ, measured marginals, ...); ``metrics``: per-epoch or per-round
    figures already logged through ``on_progress``."""

    epsilon: float
    delta: float
    accountant: str
    mechanism: str
    private: bool
    events: list[dict] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    final_loss: float = math.nan
    epsilon_check: float | None = None  # the second accountant's ε for the same events


@dataclass
class Plan:
    """What ``fit`` will spend on a number of records within a ``Budget``, from the settings
    alone (no record read), so preflight can state it and refuse before any work. ``events``:
    the mechanisms ``fit`` will run, as ``FitResult.events``; ``epsilon``: them composed with
    the budget's prior, by the accountant ``fit`` reports with; ``params``: the mechanism's
    settings (σ, q, steps; ρ, rounds, measurements). ``dpsgd``: a network trained by DP-SGD,
    which preflight builds and dry-runs from ``config`` and ``spec``. ``parts``: the plans of
    a composite family's parts."""

    family: str
    mechanism: str
    events: list[dict]
    epsilon: float
    delta: float
    params: dict[str, Any] = field(default_factory=dict)
    dpsgd: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    spec: TableSpec | None = None
    parts: dict[str, Plan] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able, for logs and artifacts (the spec left out)."""
        return {"family": self.family, "mechanism": self.mechanism, "events": self.events,
                "epsilon": self.epsilon, "delta": self.delta, "params": self.params,
                "dpsgd": self.dpsgd, "config": self.config,
                "parts": {k: p.to_dict() for k, p in self.parts.items()}}


@dataclass
class Proposal:
    """Candidates from one round: ``rows[i]`` a record, or None with ``reasons[i]`` saying why
    the raw output ``raw[i]`` (a generated line, for text models) does not make one."""

    rows: list[dict | None]
    reasons: list[str | None]
    raw: list[str | None]


@dataclass
class Drawn:
    records: list[dict] = field(default_factory=list)
    generated: int = 0
    rejected: Counter = field(default_factory=Counter)
    # Raw outputs that made no record, with their reason; the check decides which may be kept.
    quarantine: list[dict] = field(default_factory=list)
    surplus: int = 0
    # Records rejected for copying training text: never written, kept for the replay audit.
    replayed: list[dict] = field(default_factory=list)


Check = Callable[[dict], str | None]  # a record → None if it may be released, else the reason


class Generator:
    """Base class of the families. Subclasses set ``family``, ``config_class`` and implement
    ``fit``, ``_propose``, ``_save`` and ``_load``; ``log_prob`` where the family has a
    likelihood (``has_log_prob``)."""

    family: ClassVar[str] = ""
    config_class: ClassVar[type] = dict
    has_log_prob: ClassVar[bool] = False

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.config_class()
        self.spec: TableSpec | None = None
        self.fit_result: FitResult | None = None
        # Sampling settings a caller may set (text families: temperature, top_k, top_p,
        # batch_size); part of what makes two draws identical, so generate and the pyfunc
        # set them from the same values.
        self.sampling: dict[str, Any] = {}

    # -- what each family implements --------------------------------------------------------
    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """Learn ``table`` (one row per record, the columns of ``spec``) within ``budget``.
        ``on_progress`` receives per-epoch/round figures (``epoch``, ``loss``, ``epsilon``...).
        Sets ``self.spec`` and ``self.fit_result`` and returns the latter."""
        raise NotImplementedError

    def plan(self, n_records: int, budget: Budget, spec: TableSpec | None = None) -> Plan:
        """What ``fit`` on ``n_records`` records of ``spec`` within ``budget`` will spend, from
        the settings alone. ValueError when the budget cannot be met (e.g. ``budget.prior``
        already reaches its ε)."""
        raise NotImplementedError(f"the {self.family} family states no plan")

    def _propose(self, n: int, seed: int, conditions: Mapping[str, str] | None) -> Proposal:
        """``n`` candidate records, deterministic in ``seed``; rows hold every spec column,
        with ``conditions`` (column → value) fixed."""
        raise NotImplementedError

    def log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        """[len(rows)] log-likelihood of each record under the model (nats)."""
        raise NotImplementedError(f"the {self.family} family has no likelihood")

    def _save(self, directory: Path) -> None:
        raise NotImplementedError

    def _load(self, directory: Path) -> None:
        raise NotImplementedError

    def check(self, row: dict) -> str | None:
        """The family's own check of a candidate (e.g. copied training text); None: fine."""
        return None

    # -- shared ------------------------------------------------------------------------------
    def sample(self, n: int, seed: int, conditions: Mapping[str, str] | None = None,
               check: Check | None = None) -> pd.DataFrame:
        """``n`` records as a frame with the spec's columns (``draw`` without the accounts)."""
        return self.frame(self.draw(n, seed, conditions, check).records)

    def draw(self, n: int, seed: int, conditions: Mapping[str, str] | None = None,
             check: Check | None = None, keep_raw: Check | None = None) -> Drawn:
        """Draw until ``n`` records pass the family's check and ``check``, in rounds with their
        own seeds (at most ``MAX_ROUNDS``; a model keeping under ``MIN_ACCEPTANCE`` of its
        candidates stops after one). ``keep_raw``: for a raw output that made no record, None
        if it may be quarantined as it is, else the reason it may not (e.g. personal data)."""
        out = Drawn()
        for attempt in range(MAX_ROUNDS):
            need = n - len(out.records)
            if need <= 0 or (attempt and len(out.records) < MIN_ACCEPTANCE * out.generated):
                break
            size = need if not attempt else math.ceil(
                1.1 * need * out.generated / max(len(out.records), 1))
            proposal = self._propose(size, seed * 100 + attempt, conditions)
            out.generated += len(proposal.rows)
            for row, reason, raw in zip(proposal.rows, proposal.reasons, proposal.raw,
                                        strict=True):
                if row is not None:
                    reason = (image_reason(self.spec.images if self.spec else (), row)
                              or self.check(row)
                              or (check(row) if check else None))
                if reason is None:
                    out.records.append(row)
                    continue
                out.rejected[reason] += 1
                if reason == "replay":
                    out.replayed.append(row)
                if row is None and raw is not None and (keep_raw is None or
                                                        keep_raw({"text": raw}) is None):
                    out.quarantine.append({"reason": reason, "text": raw})
        out.surplus = max(len(out.records) - n, 0)
        out.records = out.records[:n]
        return out

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """Records as a frame in the spec's column order, integers as nullable Int64."""
        assert self.spec is not None, "fit or load the model first"
        df = pd.DataFrame(rows, columns=self.spec.names)
        for f in self.spec.fields:
            if f.kind == "numeric" and f.integer:
                df[f.name] = pd.to_numeric(df[f.name]).round().astype("Int64")
            elif f.kind == "numeric":
                df[f.name] = pd.to_numeric(df[f.name]).astype("Float64")
            elif f.kind == "image":
                df[f.name] = df[f.name].astype(object)  # one uint8 array [H, W, C] per row
            else:
                df[f.name] = df[f.name].astype("string")
        return df

    def config_dict(self) -> dict:
        """The config as JSON-able settings (what ``save`` writes to ``family.json``)."""
        return self.config.model_dump(mode="json") if hasattr(self.config, "model_dump") \
            else dict(self.config or {})

    def save(self, directory: str | Path) -> Path:
        """The family's files plus ``family.json`` in ``directory`` (created)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save(directory)
        meta = {"family": self.family, "config": self.config_dict(),
                "spec": self.spec.to_dict() if self.spec else None,
                "fit": asdict(self.fit_result) if self.fit_result else None}
        (directory / FAMILY_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True,
                                                        default=_jsonable))
        return directory


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def family_class(name: str) -> type[Generator]:
    """The class of family ``name``; ValueError naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown generator family {name!r}; known: {', '.join(FAMILIES)}")
    module, _, cls = FAMILIES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def create(name: str, config: Mapping | None = None) -> Generator:
    """A fresh generator of family ``name`` with ``config`` (validated by its config class)."""
    cls = family_class(name)
    cfg = config
    if config is not None and hasattr(cls.config_class, "model_validate"):
        cfg = cls.config_class.model_validate(dict(config))
    return cls(cfg)


def load(directory: str | Path) -> Generator:
    """The generator saved in ``directory`` (its ``family.json`` names the family)."""
    directory = Path(directory)
    meta = json.loads((directory / FAMILY_FILE).read_text())
    gen = create(meta["family"], meta["config"])
    gen.spec = TableSpec.from_dict(meta["spec"]) if meta.get("spec") else None
    if meta.get("fit"):
        fit = dict(meta["fit"])
        fit["epsilon"] = float(fit["epsilon"])  # "inf" for a non-private fit
        gen.fit_result = FitResult(**fit)
    gen._load(directory)
    return gen


def is_saved_generator(directory: str | Path) -> bool:
    return (Path(directory) / FAMILY_FILE).is_file()
