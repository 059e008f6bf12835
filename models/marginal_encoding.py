"""Records ↔ integer codes for the marginal families: a categorical column's declared values
(+ one missing code when nullable), a numeric column's bins (+ one missing code when nullable).

Bins come from the declared bounds only: one per value for small integer ranges, else quantile
bins read off a Gaussian-noised histogram on a fine grid inside [low, high] (a DP release of
its own, returned as an event for the accountant). Nothing else about the data shapes a domain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from models.base import FieldSpec

# Cells of the fine grid the DP quantiles are read from: few enough that the noise summed
# along the noisy CDF stays near 1 % of the records at ε = 1 on bank-full (σ·√cells).
FINE_CELLS = 256


@dataclass
class Column:
    """How one structured column maps to codes 0..size-1 (the last one missing if nullable)."""

    name: str
    kind: str
    nullable: bool
    values: list[str] | None = None
    edges: list[float] | None = None  # numeric bin j is [edges[j], edges[j+1])
    integer: bool = False
    low: float = 0.0
    high: float = 0.0
    # The fine grid and its (noisy, cut at 0) counts the quantile bins came from: already
    # released, they shape the draw inside a bin (uniform within each fine cell).
    cells: list[float] | None = None
    mass: list[float] | None = None

    @property
    def size(self) -> int:
        base = len(self.values) if self.kind == "categorical" else len(self.edges) - 1
        return base + int(self.nullable)

    def to_dict(self) -> dict:
        return asdict(self)


def _symlog(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def fine_grid(f: FieldSpec) -> np.ndarray:
    """Cell edges inside [low, high] from the bounds alone: one cell per whole number for a
    short integer range, else uniform in sign(x)·log(1+|x|), which gives heavy-tailed columns
    (balances, durations) narrow cells where the records sit and wide ones in the tails."""
    if f.integer and f.high - f.low + 1 <= FINE_CELLS:
        return np.arange(f.low - 0.5, f.high + 1.0)
    t = np.linspace(_symlog(np.float64(f.low)), _symlog(np.float64(f.high)), FINE_CELLS + 1)
    grid = np.sign(t) * np.expm1(np.abs(t))
    grid[0], grid[-1] = f.low, f.high
    return grid


def quantile_edges(grid: np.ndarray, counts: np.ndarray, bins: int, f: FieldSpec
                   ) -> list[float]:
    """Bin edges at the quantiles of the (noisy) histogram ``counts`` on ``grid``; each next
    edge splits the mass left over evenly among the bins left, so a point mass (pdays = -1
    for 82 % of bank clients) takes one bin and the rest share the others. Integer columns
    cut between whole numbers."""
    cdf = np.maximum.accumulate(np.cumsum(counts))
    low, high = (f.low - 0.5, f.high + 0.5) if f.integer else (f.low, f.high)
    if cdf[-1] <= 0:
        return list(np.linspace(low, high, bins + 1))
    cdf = np.clip(cdf / cdf[-1], 0, 1)
    edges, at = [low], 0.0
    for left in range(bins - 1, 0, -1):
        goal = at + (1 - at) / (left + 1)
        i = int(np.searchsorted(cdf, goal - 1e-12))
        if i >= len(cdf) - 1:
            break
        edge = float(grid[i + 1])
        at = float(cdf[i])
        if f.integer:
            edge = math.floor(edge) + 0.5
        if low < edge < high and edge > edges[-1]:
            edges.append(edge)
    return [*edges, high]


def plan_column(f: FieldSpec, x: pd.Series, bins: int, exact_max: int, sigma: float | None,
                rng: np.random.Generator) -> tuple[Column, bool]:
    """The column's coding; True in second place when it spent a noisy histogram (of noise
    ``sigma``; None: exact, for a non-private fit; 0 bins by bounds without one)."""
    if f.kind == "categorical":
        return Column(f.name, "categorical", f.nullable, values=list(f.values or ())), False
    col = Column(f.name, "numeric", f.nullable, integer=f.integer, low=float(f.low),
                 high=float(f.high))
    if f.integer and f.high - f.low + 1 <= exact_max:
        col.edges = list(np.arange(f.low - 0.5, f.high + 1.0))
        return col, False
    if sigma == 0:
        low, high = (f.low - 0.5, f.high + 0.5) if f.integer else (f.low, f.high)
        col.edges = list(np.linspace(low, high, bins + 1))
        if f.integer:
            col.edges = sorted({low, high} | {math.floor(e) + 0.5 for e in col.edges[1:-1]})
        return col, False
    grid = fine_grid(f)
    values = np.clip(pd.to_numeric(x, errors="coerce").dropna().to_numpy(float), f.low, f.high)
    counts = np.histogram(values, bins=grid)[0].astype(float)
    if sigma is not None:
        counts = counts + rng.normal(0.0, sigma, counts.shape)
    col.edges = quantile_edges(grid, counts, bins, f)
    col.cells, col.mass = [float(g) for g in grid], [float(m) for m in np.maximum(counts, 0)]
    return col, True


def encode(table: pd.DataFrame, columns: list[Column], *, strict: bool
           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Codes per column and the mask of records kept. A record is dropped when a column that
    is not nullable holds a missing or undeclared value (``strict``: log_prob's -inf) — a
    per-record step, so it leaves every measurement's sensitivity at 1; a nullable column
    codes both as missing."""
    keep = np.ones(len(table), dtype=bool)
    codes = {}
    for col in columns:
        raw = table[col.name]
        if col.kind == "categorical":
            index = {v: i for i, v in enumerate(col.values)}
            c = pd.to_numeric(raw.astype(object).map(index), errors="coerce").fillna(-1)
            c = c.to_numpy(dtype=np.int64)
        else:
            x = pd.to_numeric(raw, errors="coerce").to_numpy(float)
            inner = np.asarray(col.edges[1:-1])
            c = np.where(np.isnan(x), -1,
                         np.searchsorted(inner, np.clip(x, col.low, col.high), side="right"))
        bad = c < 0
        if col.nullable and not strict:
            c = np.where(bad, col.size - 1, c)
        elif col.nullable:
            missing = raw.isna().to_numpy()
            c = np.where(missing, col.size - 1, c)
            keep &= c >= 0
        else:
            keep &= ~bad
        codes[col.name] = np.maximum(c, 0).astype(np.int64)
    return codes, keep


def _within(col: Column, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Break points and CDF (0 → 1) of the draw inside numeric bin ``j``: piecewise uniform
    on the fine cells by their released counts, or uniform without them."""
    lo, hi = col.edges[j], col.edges[j + 1]
    if col.cells is None:
        return np.array([lo, hi]), np.array([0.0, 1.0])
    grid, mass = np.asarray(col.cells), np.asarray(col.mass)
    pts = np.unique(np.concatenate([[lo, hi], grid[(grid > lo) & (grid < hi)]]))
    cell = np.clip(np.searchsorted(grid, (pts[:-1] + pts[1:]) / 2, side="right") - 1,
                   0, len(mass) - 1)
    w = mass[cell] / np.diff(grid)[cell] * np.diff(pts)
    if w.sum() <= 0:
        w = np.diff(pts)
    return pts, np.concatenate([[0.0], np.cumsum(w)]) / w.sum()


def decode(codes: dict[str, np.ndarray], columns: list[Column], rng: np.random.Generator
           ) -> dict[str, list]:
    """Values per column: a category's value, or a draw inside a numeric bin (``_within``;
    rounded for integer columns); the missing code gives None/NaN."""
    out: dict[str, list] = {}
    for col in columns:
        c = codes[col.name]
        missing = col.nullable & (c == col.size - 1)
        u = rng.random(len(c))
        if col.kind == "categorical":
            values = np.asarray([*col.values, None], dtype=object)
            out[col.name] = list(np.where(missing, None, values[np.minimum(c, len(values) - 1)]))
            continue
        x = np.zeros(len(c))
        for j in np.unique(c[~missing]):
            pts, cdf = _within(col, int(j))
            x[c == j] = np.interp(u[c == j], cdf, pts)
        x = np.clip(np.round(x) if col.integer else x, col.low, col.high)
        out[col.name] = [None if m else (int(v) if col.integer else float(v))
                         for m, v in zip(missing, x, strict=True)]
    return out


def log_within(table: pd.DataFrame, codes: dict[str, np.ndarray], columns: list[Column]
               ) -> np.ndarray:
    """[n] Σ over numeric columns of the log density (integers: log probability) of the value
    inside its bin: the term turning a bin's probability into that of the value itself."""
    out = np.zeros(len(table))
    for col in columns:
        if col.kind != "numeric":
            continue
        c = codes[col.name]
        x = np.clip(pd.to_numeric(table[col.name], errors="coerce").to_numpy(float),
                    col.low, col.high)
        for j in np.unique(c[c < len(col.edges) - 1]):
            at = (c == j) & ~np.isnan(x)
            pts, cdf = _within(col, int(j))
            if col.integer:
                p = np.interp(x[at] + 0.5, pts, cdf) - np.interp(x[at] - 0.5, pts, cdf)
            else:
                seg = np.clip(np.searchsorted(pts, x[at], side="right") - 1, 0, len(pts) - 2)
                p = (cdf[seg + 1] - cdf[seg]) / (pts[seg + 1] - pts[seg])
            with np.errstate(divide="ignore"):
                out[at] += np.log(p)
    return out
