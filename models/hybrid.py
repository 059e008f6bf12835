"""Table + text: the structured columns from a table family, each record's text from a text
family prompted with that record's structured values, so a 3-star Router ticket talks about a
router. The two parts' privacy events compose into one ε at the run's target."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from models import accounting, base
from models.base import Budget, FitResult, Generator, Plan, Proposal, TableSpec

TABLE_DIR, TEXT_DIR = "table", "text"


class HybridConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    table_family: str = "aim"
    text_family: str = "dplstm"
    # Config of each part (None: the family's defaults).
    table: dict | None = None
    text: dict | None = None
    # Share of the budget left after the prior that the table part targets. A few low-order
    # marginals of four or five columns stay readable at ε ≈ 1–2 on thousands of records,
    # while a text model's millions of parameters need every bit of signal-to-noise; and as
    # Gaussian mechanisms compose in quadrature, a quarter of ε costs the text part far less
    # than a quarter of its noise budget.
    table_share: float = Field(default=0.25, gt=0.0, lt=1.0)

    @field_validator("table_family", "text_family")
    @classmethod
    def _known(cls, name: str, info: ValidationInfo) -> str:
        known = base.TABLE_FAMILIES if info.field_name == "table_family" else base.TEXT_FAMILIES
        if name not in known:
            raise ValueError(f"{info.field_name} {name!r} is not one of {known}")
        return name


class Hybrid(Generator):
    family = "hybrid"
    config_class = HybridConfig
    has_log_prob = True

    def __init__(self, config=None):
        super().__init__(config)
        self.table: Generator | None = None
        self.text: Generator | None = None

    def _parts(self) -> None:
        self.table = base.create(self.config.table_family, self.config.table)
        self.text = base.create(self.config.text_family, self.config.text)

    def _table_budget(self, budget: Budget) -> Budget:
        """The table part's budget: ε_prior + share · (ε − ε_prior). ValueError if the prior
        alone reaches the target."""
        if not budget.enabled:
            return budget
        spent = accounting.epsilon(list(budget.prior), budget.delta, budget.accountant) \
            if budget.prior else 0.0
        if spent >= budget.epsilon:
            raise ValueError(f"the releases before this one already reach ε {budget.epsilon:g}")
        return replace(budget, epsilon=spent + self.config.table_share * (budget.epsilon - spent))

    def plan(self, n_records: int, budget: Budget, spec: TableSpec | None = None) -> Plan:
        """Each part's plan as ``fit`` runs them (the text part with the table part's events
        as prior), composed by one accountant."""
        self._parts()
        structured = TableSpec(tuple(spec.structured)) if spec is not None else None
        table = self.table.plan(n_records, self._table_budget(budget), structured)
        text_budget = replace(budget, prior=(*budget.prior, *table.events)) \
            if budget.enabled else budget
        text = self.text.plan(n_records, text_budget, spec)
        events = [*table.events, *text.events]
        eps = accounting.epsilon([*budget.prior, *events], budget.delta, budget.accountant) \
            if budget.enabled else math.inf
        return Plan(self.family, f"{table.mechanism} + {text.mechanism}", events, eps,
                    budget.delta, {"table_share": self.config.table_share},
                    config=self.config_dict(), spec=spec, parts={"table": table, "text": text})

    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """The table part on the structured columns at ε_prior + share·(ε − ε_prior), then the
        text part on every column with the table part's events as prior, at the full target.
        ValueError if the spec has no text column or the prior alone reaches the target."""
        if not spec.text or not spec.structured:
            raise ValueError("hybrid needs structured columns and at least one text column")
        started = time.monotonic()
        self._parts()
        self.spec = spec
        structured = TableSpec(tuple(spec.structured))
        prior = list(budget.prior) if budget.enabled else []
        table_budget = self._table_budget(budget)
        table_fit = self.table.fit(table[structured.names], structured, table_budget,
                                   seed=seed, on_progress=lambda m: on_progress(
                                       {**m, "part": "table"}))
        text_budget = replace(budget, prior=(*prior, *table_fit.events)) \
            if budget.enabled else budget
        text_fit = self.text.fit(table, spec, text_budget, seed=seed + 1,
                                 on_progress=lambda m: on_progress({**m, "part": "text"}))
        events = [*table_fit.events, *text_fit.events]
        private = budget.enabled
        self.fit_result = FitResult(
            epsilon=accounting.epsilon(prior + events, budget.delta, budget.accountant)
            if private else math.inf,
            delta=budget.delta, accountant=budget.accountant,
            mechanism=f"{table_fit.mechanism} + {text_fit.mechanism}", private=private,
            events=events, seconds=time.monotonic() - started, final_loss=text_fit.final_loss,
            epsilon_check=accounting.epsilon_check(prior + events, budget.delta)
            if private else None,
            params={"table_family": self.config.table_family,
                    "text_family": self.config.text_family,
                    "table_share": self.config.table_share,
                    "table_epsilon": table_fit.epsilon, "text_epsilon": text_fit.epsilon,
                    **{f"table.{k}": v for k, v in table_fit.params.items()},
                    **{f"text.{k}": v for k, v in text_fit.params.items()}})
        return self.fit_result

    def _propose(self, n: int, seed: int, conditions: Mapping[str, str] | None) -> Proposal:
        self.text.sampling = self.sampling  # the caller's settings reach the text part
        structured = self.table._propose(n, seed, conditions)
        kept = [i for i, r in enumerate(structured.rows) if r is not None]
        done = self.text.complete([structured.rows[i] for i in kept], seed)
        rows = list(structured.rows)
        for i, row in zip(kept, done, strict=True):
            rows[i] = row
        return Proposal(rows, structured.reasons, structured.raw)

    def check(self, row: dict) -> str | None:
        return self.text.check(row)

    def log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        """[N] log p(structured) under the table part + log p(text | structured) under the text
        part (nats). NotImplementedError if the table part has no likelihood."""
        names = [f.name for f in self.spec.structured]
        return self.table.log_prob(rows[names]) + self.text.text_log_prob(rows)

    def perplexity(self, rows: pd.DataFrame) -> float:
        """The text part's perplexity of ``rows`` (whole records: the text given the row's
        structured values), per word for dplstm, per token for causal_lm."""
        return self.text.perplexity(rows)

    def _save(self, directory: Path) -> None:
        self.table.save(directory / TABLE_DIR)
        self.text.save(directory / TEXT_DIR)

    def _load(self, directory: Path) -> None:
        self.table = base.load(directory / TABLE_DIR)
        self.text = base.load(directory / TEXT_DIR)
