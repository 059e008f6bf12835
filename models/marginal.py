"""Marginal-based synthesis: AIM (McKenna et al. 2022, "AIM: An Adaptive and Iterative Mechanism
for DP Synthetic Data") and MST (McKenna et al. 2021, "Winning the NIST Contest").

Both measure low-order marginals of the coded table with Gaussian noise, fit a graphical model to
the noisy marginals with Private-PGM (``mbi``'s mirror descent) and sample from it. MST measures a
maximum spanning tree of pairs picked with the exponential mechanism; AIM picks, round by round,
the worst-approximated marginal of a workload whose model still fits a size cap, and halves its
noise when a measurement no longer changes the model. All in ρ-zCDP, composed into (ε, δ) by
``models.accounting``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models import accounting
from models.base import Budget, FitResult, Generator, Plan, Proposal, TableSpec
from models.marginal_encoding import Column, decode, encode, log_within, plan_column
from models.marginal_select import aim_rounds, estimate, junction_tree, mst_tree
from models.marginal_tree import JunctionTree

WEIGHTS, MODEL = "model.npz", "model.json"


class MarginalConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # 16 bins keep a numeric×numeric marginal at 256 cells, which Gaussian noise at ε = 1 on
    # ~45k records still leaves readable; a finer grid costs noise in every cell.
    numeric_bins: int = Field(16, ge=2, le=256)
    # Whole-number columns with at most this many values (day of month, a 1–5 rating) get one
    # bin per value: cheaper than quantiles and exact.
    exact_integer_max: int = Field(32, ge=1)
    # Share of ρ spent on the noisy histograms the quantile bins are read from; 0 bins by the
    # declared bounds instead (poor for heavy tails: most of bank's balances in one bin).
    quantile_share: float = Field(0.05, ge=0.0, lt=0.5)
    # Mirror-descent steps of the final fit (mbi runs them in blocks of 50).
    final_iters: int = Field(500, ge=50)


class AIMConfig(MarginalConfig):
    # The paper runs up to 16·d rounds; each round here re-fits the model, and mbi compiles a
    # new JAX program for each new set of cliques (several seconds on 2 cores), so a cap of 24
    # keeps bank-full (17 columns) within minutes. Annealing makes rounds fewer, never more.
    rounds: int = Field(24, ge=1)
    # Cap on the junction tree (MB of float64 cells); the paper's 80 MB takes hours on CPU.
    max_model_size: float = Field(2.0, gt=0)
    # Share of the mechanism's ρ for the first measurement of every 1-way marginal (the paper
    # spends one round's noise on each, which with a small round cap would be nearly all of ρ).
    one_way_share: float = Field(0.15, gt=0, lt=1)
    # Warm-started mirror-descent steps per round.
    round_iters: int = Field(100, ge=50)
    # A label column: the workload adds every 3-way marginal holding it (what a classifier
    # trained on the synthetic data needs); None: all 2-way marginals only.
    target: str | None = None


class MSTConfig(MarginalConfig):
    pass


class _Marginal(Generator):
    """The shared part: coding, measuring, fitting the graphical model, sampling, saving."""

    has_log_prob = True
    mechanism_name = ""

    def __init__(self, config=None):
        super().__init__(config)
        self.columns: list[Column] = []
        self.tree: JunctionTree | None = None

    def _select_and_measure(self, codes, sizes, rho, rng, private, on_progress):
        """(mbi measurements, params, privacy events, model to warm-start the final fit or
        None) of the family's mechanism at ``rho`` on the coded records ``codes``."""
        raise NotImplementedError

    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """Fit on ``table`` (the spec's columns; text columns are not modelled and come out
        None) within ``budget``. ValueError if the prior releases already reach the target."""
        start = time.perf_counter()
        rng = np.random.default_rng(seed)
        cfg, private = self.config, budget.enabled
        rho = accounting.rho_for(budget.epsilon, budget.delta, list(budget.prior)) \
            if private else math.inf
        fields = spec.structured
        if not fields:
            raise ValueError(f"the {self.family} family models structured columns and the "
                             "spec has none; use a text family")
        to_plan = [f for f in fields if f.kind == "numeric" and cfg.quantile_share > 0
                   and not (f.integer and f.high - f.low + 1 <= cfg.exact_integer_max)]
        rho_q = cfg.quantile_share * rho if private and to_plan else 0.0
        sigma_q = math.sqrt(len(to_plan) / (2 * rho_q)) if rho_q else None
        events: list[dict] = []
        self.columns = []
        for f in fields:
            sigma = (sigma_q if private else None) if cfg.quantile_share > 0 else 0
            col, spent = plan_column(f, table[f.name], cfg.numeric_bins, cfg.exact_integer_max,
                                     sigma, rng)
            if spent and private:
                events.append(accounting.gaussian(sigma_q))
            self.columns.append(col)
        codes, keep = encode(table, self.columns, strict=False)
        codes = {k: v[keep] for k, v in codes.items()}
        sizes = {c.name: c.size for c in self.columns}
        measurements, params, mech_events, warm = self._select_and_measure(
            codes, sizes, rho - rho_q, rng, private, on_progress)
        events += mech_events
        model = estimate(sizes, measurements, cfg.final_iters, warm)
        self.tree = junction_tree(sizes, model)
        self.spec = spec
        eps = accounting.epsilon([*budget.prior, *events], budget.delta, "rdp") \
            if private else math.inf
        check = accounting.epsilon_check([*budget.prior, *events], budget.delta) \
            if private else None
        params = {"rho": rho, "rho_quantiles": rho_q, "sigma_quantiles": sigma_q, **params,
                  "bins": {c.name: c.size for c in self.columns}}
        self.fit_result = FitResult(
            epsilon=eps, delta=budget.delta, accountant="rdp", mechanism=self.mechanism_name,
            private=private, events=events, params=params,
            seconds=time.perf_counter() - start, epsilon_check=check)
        return self.fit_result

    def plan(self, n_records: int, budget: Budget, spec: TableSpec | None = None) -> Plan:
        """ρ as ``fit`` takes it from the budget; its events (noisy histograms and marginals,
        selections) all compose as ρ-zCDP, so one zCDP event of ρ stands for them."""
        private = budget.enabled
        rho = accounting.rho_for(budget.epsilon, budget.delta, list(budget.prior)) \
            if private else math.inf
        events = [accounting.zcdp(rho)] if private else []
        eps = accounting.epsilon([*budget.prior, *events], budget.delta, "rdp") \
            if private else math.inf
        params: dict = {"rho": rho, "quantile_share": self.config.quantile_share}
        if spec is not None:
            params |= self._planned(len(spec.structured))
        return Plan(self.family, self.mechanism_name if private else "none (non-private)",
                    events, eps, budget.delta, params, config=self.config_dict(), spec=spec)

    def _planned(self, d: int) -> dict:
        """The measurements and selections of ``d`` structured columns, at most."""
        raise NotImplementedError

    def _codes_for(self, conditions: Mapping[str, object]) -> dict[str, int]:
        frame = pd.DataFrame([dict(conditions)], columns=list(conditions))
        cols = [c for c in self.columns if c.name in conditions]
        unknown = set(conditions) - {c.name for c in cols}
        if unknown:
            raise ValueError(f"conditions on {sorted(unknown)}: not structured columns of "
                             "this model")
        codes, keep = encode(frame, cols, strict=True)
        outside = [c.name for c in cols if c.kind == "numeric" and conditions[c.name] is not None
                   and not c.low <= float(conditions[c.name]) <= c.high]
        if not keep.all() or outside:
            raise ValueError(f"conditions {dict(conditions)} hold a value the spec does not "
                             "declare")
        return {k: int(v[0]) for k, v in codes.items()}

    def _propose(self, n: int, seed: int, conditions: Mapping[str, str] | None) -> Proposal:
        assert self.tree is not None and self.spec is not None, "fit or load the model first"
        rng = np.random.default_rng(seed)
        beliefs = self.tree.calibrate(self._codes_for(conditions)) if conditions else None
        values = decode(self.tree.sample(n, rng, beliefs), self.columns, rng)
        for name, value in (conditions or {}).items():
            values[name] = [value] * n
        rows = [{f.name: (values[f.name][i] if f.name in values else None)
                 for f in self.spec.fields} for i in range(n)]
        return Proposal(rows, [None] * n, [None] * n)

    def log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        """[len(rows)] log-likelihood (nats): Σ cliques log μ_C − Σ separators log μ_S of the
        coded record, plus each numeric value's log density inside its bin (log probability
        for integer columns); -inf for a record holding a value the spec does not declare."""
        assert self.tree is not None, "fit or load the model first"
        codes, keep = encode(rows, self.columns, strict=True)
        out = self.tree.log_prob(codes) + log_within(rows, codes, self.columns)
        return np.where(keep, out, -np.inf)

    def _save(self, directory: Path) -> None:
        tree = self.tree
        meta = {"columns": [c.to_dict() for c in self.columns], "nodes": tree.nodes,
                "parent": tree.parent, "order": tree.order, "sizes": tree.sizes}
        (directory / MODEL).write_text(json.dumps(meta, indent=1))
        np.savez(directory / WEIGHTS, **{f"pot{i}": p for i, p in enumerate(tree.log_pot)})

    def _load(self, directory: Path) -> None:
        meta = json.loads((directory / MODEL).read_text())
        self.columns = [Column(**c) for c in meta["columns"]]
        with np.load(directory / WEIGHTS, allow_pickle=False) as z:
            pots = [z[f"pot{i}"] for i in range(len(meta["nodes"]))]
        self.tree = JunctionTree([tuple(n) for n in meta["nodes"]], meta["parent"],
                                 meta["order"], pots, meta["sizes"])
        self.tree.beliefs = self.tree.calibrate()


class AIM(_Marginal):
    """AIM (McKenna et al. 2022) with a round cap for CPU time (see ``AIMConfig``)."""

    family = "aim"
    config_class = AIMConfig
    mechanism_name = "AIM (McKenna et al. 2022), zCDP"

    def _planned(self, d: int) -> dict:
        rounds = self.config.rounds
        return {"one_way_measurements": d, "rounds_at_most": rounds,
                "measurements_at_most": d + rounds, "selections_at_most": rounds}

    def _select_and_measure(self, codes, sizes, rho, rng, private, on_progress):
        cfg = self.config
        if cfg.target is not None and cfg.target not in sizes:
            raise ValueError(f"aim.target {cfg.target!r} is not a structured column "
                             f"(columns: {', '.join(sizes)})")
        return aim_rounds(codes, sizes, rho, rng, private, cfg, on_progress)


class MST(_Marginal):
    """MST (McKenna et al. 2021): 1-way marginals, a noisy maximum spanning tree of pairs
    (Kruskal with the exponential mechanism), the tree's 2-way marginals; ρ in thirds."""

    family = "mst"
    config_class = MSTConfig
    mechanism_name = "MST (McKenna et al. 2021), zCDP"

    def _planned(self, d: int) -> dict:
        return {"one_way_measurements": d, "two_way_measurements": max(d - 1, 0),
                "selections": max(d - 1, 0)}

    def _select_and_measure(self, codes, sizes, rho, rng, private, on_progress):
        return mst_tree(codes, sizes, rho, rng, private, on_progress)

