"""The data contract: each column's type, role and allowed values, shared by the stages."""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Role(StrEnum):
    ID = "id"
    DIRECT_IDENTIFIER = "direct_identifier"
    QUASI_IDENTIFIER = "quasi_identifier"
    SENSITIVE = "sensitive"
    TEXT = "text"
    CATEGORY = "category"
    NUMERIC = "numeric"
    DATETIME = "datetime"


class DType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    DATE = "date"
    DATETIME = "datetime"


class Domain(StrEnum):
    """Where a column's ``allowed`` values and ``min``/``max``/``earliest``/``latest`` bounds came
    from. Generation keeps records inside them, so they reach every synthetic record."""

    # Published by the data owner (a product catalog, a rating scale): free to release.
    PUBLIC = "public"
    # Seen in the private data (what ``privgen validate --infer`` writes): a category that
    # occurs once or the oldest person's age. Training estimates them under DP or refuses
    # (``train.privacy.observed_domains``); they never reach a model as they are.
    OBSERVED = "observed"
    # Released by a DP mechanism from observed values (tasks/domain.py), paid for in ε.
    ESTIMATED = "estimated"


class ColumnSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    dtype: DType = DType.STRING
    role: Role = Role.CATEGORY
    nullable: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    regex: str | None = None
    allowed: tuple[str, ...] | None = None
    # strftime format of a date or datetime column; null means ISO 8601.
    format: str | None = None
    # Inclusive bounds of a date or datetime column (a datetime by its UTC date): validation
    # quarantines rows outside them, generation samples only inside them.
    earliest: date | None = None
    latest: date | None = None
    # Hand-written contracts declare public lists and bounds; an inferred one marks them observed.
    domain: Domain = Domain.PUBLIC

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} is above max {self.max}")
        if (self.earliest or self.latest) and self.dtype not in (DType.DATE, DType.DATETIME):
            raise ValueError(f"column {self.name!r}: earliest/latest need dtype date or "
                             f"datetime, not {self.dtype}")
        if self.earliest and self.latest and self.earliest > self.latest:
            raise ValueError(f"column {self.name!r}: earliest {self.earliest} is after latest "
                             f"{self.latest}")
        return self

    def domain_fields(self) -> list[str]:
        """The value-domain fields this spec sets: ``allowed``, ``min``, ``max``, ..."""
        return [k for k in ("allowed", "min", "max", "earliest", "latest")
                if getattr(self, k) is not None]

    def date_bounds(self) -> tuple[datetime, datetime] | None:
        """The first and last instants ``earliest``/``latest`` allow (naive, UTC), or None."""
        if self.earliest is None and self.latest is None:
            return None
        first = datetime.combine(self.earliest or date.min, time.min)
        return first, datetime.combine(self.latest or date.max, time.max)


class DataContract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: tuple[ColumnSpec, ...] = Field(min_length=1)
    # A column the contract does not name is schema drift ("fail"), or dropped ("ignore").
    extra_columns: Literal["fail", "ignore"] = "fail"

    @model_validator(mode="after")
    def _names_are_unique(self) -> DataContract:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"column names appear twice in the contract: {', '.join(dupes)}")
        return self

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def with_role(self, *roles: Role) -> list[ColumnSpec]:
        return [c for c in self.columns if c.role in roles]
