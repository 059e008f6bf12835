"""The row transformer the neural table families share: records ⇄ one float vector per row.

CTGAN and TVAE (Xu et al. 2019, "Modeling Tabular Data using Conditional GAN", §4.2) write a
numeric value as the one-hot of its mode plus its offset α ∈ [-1, 1] inside that mode, and a
categorical one as a one-hot. Xu et al. fit the modes with a variational Gaussian mixture on the
column's values; that would read private values for free. Here the modes come from the spec's
public bounds only: ``modes`` equal-width bins over [low, high], α the position inside the bin
(−1 at its left edge, +1 at its right). Fitting the mixture under DP instead would cost budget
and code for little gain: the networks learn how the mass spreads over the modes and inside
them under DP-SGD anyway, and nothing but ``TableSpec`` reaches this transformer.

Missing values: a nullable categorical gets a last "missing" category; a nullable numeric a
two-way block (present, missing). A category the spec does not release (the domain stage may
drop rare ones), or a missing value in a non-nullable column, encodes as an all-zero block: the
row says nothing about that column and the decoder can never emit it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from models.base import FieldSpec, TableSpec


@dataclass(frozen=True)
class Block:
    """Columns ``start:start+width`` of the encoded row. ``kind``: "offset" (one α in [-1, 1],
    tanh-activated) or "onehot" (softmax); ``role``: "value" (a categorical), "offset", "mode"
    or "null" (a numeric's parts); ``field``: the spec column it belongs to."""

    field: str
    role: str
    kind: str
    start: int
    width: int

    @property
    def stop(self) -> int:
        return self.start + self.width


class RowTransformer:
    """Encodes and decodes the structured columns of ``spec`` (text columns are not its business).

    ``blocks``: the layout of an encoded row, in spec order; ``width``: its length."""

    def __init__(self, spec: TableSpec, modes: int = 10):
        self.spec, self.modes = spec, modes
        self.fields = spec.structured
        blocks, start = [], 0
        for f in self.fields:
            if f.kind == "categorical":
                if not f.values:
                    raise ValueError(f"categorical field {f.name!r} declares no values; the "
                                     "spec must list what it may emit")
                parts = [("value", "onehot", len(f.values) + f.nullable)]
            else:
                if f.low is None or f.high is None or not f.low <= f.high:
                    raise ValueError(f"numeric field {f.name!r} needs bounds low <= high "
                                     f"(got {f.low}, {f.high})")
                parts = [("offset", "offset", 1), ("mode", "onehot", self._modes(f))]
                parts += [("null", "onehot", 2)] if f.nullable else []
            for role, kind, width in parts:
                blocks.append(Block(f.name, role, kind, start, width))
                start += width
        self.blocks: list[Block] = blocks
        self.width = start

    def _modes(self, f: FieldSpec) -> int:
        span = f.high - f.low
        if span == 0:
            return 1
        # An integer column never needs more bins than it has values.
        return min(self.modes, int(span) + 1) if f.integer else self.modes

    def block(self, field: str, role: str) -> Block:
        return next(b for b in self.blocks if b.field == field and b.role == role)

    @property
    def categorical(self) -> list[Block]:
        """The categorical columns' one-hot blocks (what CTGAN's conditional vector spans)."""
        return [b for b in self.blocks if b.role == "value"]

    # -- records → vectors --------------------------------------------------------------------
    def encode(self, table: pd.DataFrame) -> np.ndarray:
        """[len(table), width] float32 rows; ValueError if a spec column is absent."""
        absent = [f.name for f in self.fields if f.name not in table.columns]
        if absent:
            raise ValueError(f"table lacks spec column(s) {absent}")
        out = np.zeros((len(table), self.width), dtype=np.float32)
        rows = np.arange(len(table))
        for f in self.fields:
            col = table[f.name]
            if f.kind == "categorical":
                b = self.block(f.name, "value")
                index = {v: i for i, v in enumerate(f.values)}
                missing = col.isna().to_numpy()
                codes = np.array([-1 if m else index.get(str(v), -1)
                                  for v, m in zip(col, missing, strict=True)])
                if f.nullable:
                    codes[missing] = len(f.values)
                ok = codes >= 0
                out[rows[ok], b.start + codes[ok]] = 1.0
                continue
            x = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
            present = np.isfinite(x)
            mode, alpha = self._split(f, np.clip(np.nan_to_num(x), f.low, f.high))
            ob, mb = self.block(f.name, "offset"), self.block(f.name, "mode")
            out[present, ob.start] = alpha[present]
            out[rows[present], mb.start + mode[present]] = 1.0
            if f.nullable:
                nb = self.block(f.name, "null")
                out[rows, nb.start + (~present).astype(int)] = 1.0
        return out

    def _split(self, f: FieldSpec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mode index, α) of each value in [low, high]."""
        k = self._modes(f)
        if k == 1:
            return np.zeros(len(x), dtype=int), np.zeros(len(x))
        width = (f.high - f.low) / k
        mode = np.minimum(((x - f.low) / width).astype(int), k - 1)
        centre = f.low + (mode + 0.5) * width
        return mode, np.clip((x - centre) / (width / 2), -1.0, 1.0)

    # -- vectors → records --------------------------------------------------------------------
    def decode(self, offsets: dict[str, np.ndarray], choices: dict[tuple[str, str], np.ndarray]
               ) -> list[dict]:
        """Records from a model's outputs: ``offsets[field]`` [N] α values (clipped to [-1, 1]),
        ``choices[(field, role)]`` [N] the chosen index in each one-hot block. Only spec values
        come out: categories from ``values`` (None for the missing one), numerics clipped to
        [low, high], integers rounded, NaN where the null block says missing."""
        columns: dict[str, list] = {}
        for f in self.fields:
            if f.kind == "categorical":
                labels = [*f.values, None] if f.nullable else list(f.values)
                columns[f.name] = [labels[i] for i in choices[(f.name, "value")]]
                continue
            k = self._modes(f)
            mode = choices[(f.name, "mode")]
            alpha = np.clip(offsets[f.name], -1.0, 1.0)
            width = (f.high - f.low) / k
            x = np.clip(f.low + (mode + 0.5) * width + alpha * width / 2, f.low, f.high)
            if f.integer:
                x = np.clip(np.round(x), np.ceil(f.low), np.floor(f.high))
            if f.nullable:
                x = np.where(choices[(f.name, "null")] == 1, np.nan, x)
            columns[f.name] = list(x)
        n = len(next(iter(columns.values()))) if columns else 0
        return [{name: columns[name][i] for name in columns} for i in range(n)]

    def sample(self, raw: torch.Tensor, generator: torch.Generator,
               logscale: torch.Tensor | None = None) -> list[dict]:
        """Records drawn from a model's raw output [N, width] (α pre-tanh, logits per one-hot):
        each one-hot block's index ~ softmax(logits); α = tanh(raw), plus Gaussian noise of
        std exp(``logscale``) [N, numerics] where the model has an output scale (TVAE)."""
        offsets, choices = {}, {}
        k = 0
        for b in self.blocks:
            part = raw[:, b.start:b.stop]
            if b.kind == "offset":
                alpha = torch.tanh(part[:, 0])
                if logscale is not None:
                    noise = torch.randn(alpha.shape, generator=generator)
                    alpha = alpha + noise * logscale[:, k].exp()
                    k += 1
                offsets[b.field] = alpha.numpy().astype(float)
            else:
                idx = torch.multinomial(torch.softmax(part, dim=1), 1, generator=generator)
                choices[(b.field, b.role)] = idx[:, 0].numpy()
        return self.decode(offsets, choices)

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "modes": self.modes,
                "blocks": [asdict(b) for b in self.blocks]}

    @classmethod
    def from_dict(cls, d: dict) -> RowTransformer:
        out = cls(TableSpec.from_dict(d["spec"]), d["modes"])
        if [asdict(b) for b in out.blocks] != d["blocks"]:
            raise ValueError("saved transformer layout differs from the one its spec builds")
        return out


def matches(row: dict, conditions: Mapping[str, str] | None) -> bool:
    """Whether ``row`` holds every ``conditions`` value (numbers compared as floats)."""
    for name, want in (conditions or {}).items():
        got = row.get(name)
        if isinstance(got, str) or got is None:
            if got != want:
                return False
        elif not (isinstance(want, (int, float, str)) and _number(want) == float(got)):
            return False
    return True


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def check_conditions(spec: TableSpec, conditions: Mapping[str, str] | None) -> None:
    """ValueError if a condition names no structured column or a value the spec never emits."""
    for name, value in (conditions or {}).items():
        f = next((f for f in spec.structured if f.name == name), None)
        if f is None:
            raise ValueError(f"condition on {name!r}: not a structured column of the model")
        if f.kind == "categorical" and value not in f.values:
            raise ValueError(f"condition {name}={value!r}: not among the column's values")
        if f.kind == "numeric" and not (_number(value) is not None
                                        and f.low <= _number(value) <= f.high):
            raise ValueError(f"condition {name}={value!r}: not a number in [{f.low}, {f.high}]")


# A condition this rare in the model's output is not worth more candidates in one round: the
# rows still missing go back to the draw loop as rejections, which says so.
REJECTION_ROUNDS = 20


def propose_matching(generate: Callable[[int, torch.Generator], list[dict]], spec: TableSpec,
                     n: int, seed: int, conditions: Mapping[str, str] | None):
    """``Proposal`` of ``n`` rows from ``generate(m, generator) -> list[dict]``, deterministic
    in ``seed``, every returned row holding ``conditions`` (by rejection: up to
    ``REJECTION_ROUNDS`` batches; rows still missing come back as None with the reason
    "condition_not_met"). ValueError for a condition the spec cannot meet."""
    from models.base import Proposal

    check_conditions(spec, conditions)
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    for _ in range(REJECTION_ROUNDS if conditions else 1):
        need = n - len(rows)
        if need <= 0:
            break
        batch = generate(need if not conditions else max(need, 64), gen)
        rows += [r for r in batch if matches(r, conditions)][:need]
    short = n - len(rows)
    return Proposal(rows=[*rows, *[None] * short],
                    reasons=[*[None] * len(rows), *["condition_not_met"] * short],
                    raw=[None] * n)
