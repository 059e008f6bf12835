"""The train stage's config: which family (``auto`` picks one), each family's section, and the
privacy settings every family trains under. Beside the stage modules that read it (tasks.train,
tasks.train_lm, tasks.train_family, tasks.dpsgd); tasks.train re-exports it."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models import base, causal_lm
from tasks import spec
from tasks.distributed_config import FAMILIES as DISTRIBUTED
from tasks.distributed_config import DistributedConfig


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # ε = 8 is the common ceiling for useful DP language models (e.g. Li et al., 2022).
    target_epsilon: float = Field(default=8.0, gt=0.0, le=100.0)
    # Preflight refuses plans above this; raise it only with a written reason.
    epsilon_ceiling: float = Field(default=10.0, gt=0.0)
    # None: 1 / (10·N), safely below the 1/N at which δ stops meaning anything.
    target_delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    # PRV gives tighter ε than RDP for the same noise (Gopi et al., 2021).
    accountant: Literal["prv", "rdp"] = "prv"
    # "ghost": per-sample gradient norms without per-sample gradients (Li et al., 2022);
    # the clipped update is the same (tests/unit/test_dp_correctness.py), see benchmarks/dp_step.py.
    grad_sample_mode: Literal["hooks", "ghost"] = "hooks"
    # The accountant assumes Poisson sampling; fixed-size batches would make its ε a lie.
    poisson_sampling: bool = True
    # Release runs: cryptographically secure noise and sampling (needs torchcsprng).
    secure_mode: bool = False
    # Contract values seen in the private data (``domain: observed``) that generation would keep
    # records to: "dp" estimates them under DP from ``domain_share`` of the budget
    # (tasks/domain.py); "refuse" stops before training, naming what to declare public.
    observed_domains: Literal["dp", "refuse"] = "dp"
    # DP-SGD is calibrated to (1 - share) of target_epsilon; the estimates get the least noise
    # that keeps the composition within target_epsilon, and share/2 of δ for thresholds.
    domain_share: float = Field(default=0.1, gt=0.0, lt=1.0)
    # The most ε all releases on the same people may compose to (tasks/ledger.py, issue 15):
    # a run that would cross it is refused before training. None: no lifetime limit.
    lifetime_budget: float | None = Field(default=None, gt=0.0)

    @field_validator("poisson_sampling")
    @classmethod
    def _poisson_only(cls, value: bool) -> bool:
        if not value:
            raise ValueError("must stay true: the accountant's ε assumes Poisson sampling")
        return value

    @field_validator("secure_mode")
    @classmethod
    def _csprng_installed(cls, value: bool) -> bool:
        if value and importlib.util.find_spec("torchcsprng") is None:
            raise ValueError("needs the torchcsprng package (pip install torchcsprng, built for "
                             "your torch version; https://github.com/pytorch/csprng)")
        return value


Family = Literal["auto", "aim", "mst", "tvae", "dpctgan", "dplstm", "causal_lm", "hybrid"]


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # "auto": no text column → aim; text and structured columns → hybrid; text only →
    # causal_lm (tasks.spec.choose_family says why, and falls back to causal_lm for a column
    # with no finite released domain or a family not installed).
    family: Family = "auto"
    # The causal LM's section (its name predates the families).
    model: causal_lm.LMConfig = Field(default_factory=causal_lm.LMConfig)
    # One section per family, validated by the family's own config class when it is
    # installed (see _sections_are_valid). Integration: type each as its class once the
    # module is on main, e.g. ``aim: AIMConfig = Field(default_factory=AIMConfig)``.
    aim: dict[str, Any] = Field(default_factory=dict)
    mst: dict[str, Any] = Field(default_factory=dict)
    tvae: dict[str, Any] = Field(default_factory=dict)
    dpctgan: dict[str, Any] = Field(default_factory=dict)
    dplstm: dict[str, Any] = Field(default_factory=dict)
    hybrid: dict[str, Any] = Field(default_factory=dict)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    # 10 on the demo (3,000 rows): the same ε = 8 buys held-out perplexity 7.0 against 9.2
    # after 3, and the non-private control trained alike fits its members enough (AUC 0.59
    # against 0.48) for the membership test to show the audit's power; after 3 neither moved.
    epochs: int = Field(default=10, ge=1)
    # Expected (logical) batch under Poisson sampling; DP favours large batches.
    batch_size: int = Field(default=64, ge=1)
    # Largest batch put through the model at once; larger Poisson draws are split and their
    # clipped gradients summed before one noisy step (Opacus' BatchMemoryManager).
    physical_batch_size: int = Field(default=64, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0.0)
    # Held out before training, never seen by it, for perplexity and the privacy audit.
    holdout_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    # "auto": the GPU when torch sees one, else the CPU. Training stays in float32: bf16
    # per-sample gradients lose the precision clipping relies on, and this CPU has no bf16
    # units to gain from.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Processes DP-SGD runs in (tasks.distributed): 1 here, more under torchrun on loopback.
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    @model_validator(mode="after")
    def _ghost_needs_untied_weights(self) -> TrainConfig:
        if self.privacy.grad_sample_mode == "ghost" and self.model.tie_embeddings:
            raise ValueError("privacy.grad_sample_mode=ghost cannot clip tied embeddings "
                             "(Opacus refuses tied parameters); set model.tie_embeddings=false")
        return self

    @model_validator(mode="after")
    def _distributed_is_supported(self) -> TrainConfig:
        if self.distributed.world_size == 1:
            return self
        if self.privacy.secure_mode:
            raise ValueError(f"train.distributed.world_size={self.distributed.world_size} cannot "
                             "run train.privacy.secure_mode: the per-rank sampler draws from "
                             "torch generators; set train.distributed.world_size=1")
        if self.family not in ("auto", *DISTRIBUTED):  # auto's choice is checked when made
            raise ValueError(f"train.distributed.world_size={self.distributed.world_size}: "
                             f"family {self.family} trains in one process only (distributed: "
                             f"{', '.join(DISTRIBUTED)}); set train.distributed.world_size=1 "
                             "or another train.family")
        return self

    @model_validator(mode="after")
    def _sections_are_valid(self) -> TrainConfig:
        for name in SECTIONS:
            section = getattr(self, name)
            if name == self.family and not spec.available(name):
                raise ValueError(f"family {name}: models/{_module(name)}.py is not installed")
            if section and spec.available(name):
                try:
                    base.family_class(name).config_class.model_validate(section)
                except ValidationError as exc:
                    err = exc.errors()[0]
                    where = ".".join(str(p) for p in (name, *err["loc"]))
                    raise ValueError(f"{where}: {err['msg']}") from None
        return self

    def section(self, family: str) -> Any:
        """The config of ``family`` (its section; ``model`` for the causal LM)."""
        return self.model if family == "causal_lm" else getattr(self, family)


SECTIONS = ("aim", "mst", "tvae", "dpctgan", "dplstm", "hybrid")


def _module(name: str) -> str:
    return base.FAMILIES[name].partition(":")[0].rsplit(".", 1)[-1]


def resolve_family(cfg: TrainConfig, released: spec.DataContract, columns: Iterable[str],
                   label: str | None = None) -> tuple[str, str, TrainConfig]:
    """(family, reason, config) train runs: ``train.family`` as set, or ``auto``'s choice
    (``choose_family``) with ``label`` (the evaluation label, ``evaluate.utility_label``) as
    AIM's target when it is a structured column. AIM is workload-aware (McKenna et al. 2022):
    with a target its workload adds every 3-way marginal holding it (models.marginal_select.
    workload), so the label's joint distributions with the other columns, which a model
    trained on the synthetic rows needs, get the budget. Applied to aim, and to hybrid's table
    part when that is aim; a ``target`` the user set in ``train.aim`` or
    ``train.hybrid.table`` (null included) wins."""
    if cfg.family != "auto":
        return cfg.family, "set in train.family", cfg
    columns = list(columns)
    family, reason = spec.choose_family(released, columns)
    kept = [c for c in released.columns if c.name in columns and c.role not in spec._EXCLUDED]
    if label is None or label not in {c.name for c in kept if c.role is not spec.Role.TEXT}:
        return family, reason, cfg
    section = dict(cfg.section(family)) if family in ("aim", "hybrid") else {}
    if family == "aim" and "target" not in section:
        section["target"] = label
        where = "aim.target"
    elif family == "hybrid" and _table_family(section) == "aim" \
            and "target" not in (section.get("table") or {}):
        section["table"] = {**(section.get("table") or {}), "target": label}
        where = "hybrid.table.target"
    else:
        return family, reason, cfg
    return (family, f"{reason}; {where} {label} (the evaluation label)",
            cfg.model_copy(update={family: section}))


def _table_family(hybrid: dict) -> str:
    return hybrid.get("table_family") or \
        base.family_class("hybrid").config_class.model_fields["table_family"].default
