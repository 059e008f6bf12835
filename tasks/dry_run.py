"""Preflight's dry run of a family's DP-SGD network: its own fit, one epoch of two steps on
random rows of the table's shape, so Opacus validates the network as it wraps it and a shape,
memory or hook failure shows up before any privacy budget is spent."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from models import base
from models.base import Plan, TableSpec
from tasks.errors import PrivacyError
from tasks.train_config import PrivacyConfig


def dry_run(plan: Plan, privacy: PrivacyConfig, seed: int) -> float:
    """One epoch of two steps of the family's own fit on random rows of the table's shape, at
    the plan's batch size: Opacus validates the family's network as it wraps it (its
    ``ModuleValidator``, strict), and a shape, memory or hook failure shows up now."""
    from opacus.validators.errors import UnsupportedModuleError

    rows = 2 * max(int(plan.params.get("batch_size") or 1), 1)
    table = random_table(plan.spec, rows, seed, int(plan.config.get("max_words") or 64))
    gen = base.create(plan.family, {**plan.config, "epochs": 1})
    # ε = 1 keeps σ where Opacus' Rényi series converge at q = ½ (it warns below σ ≈ 0.7).
    budget = base.Budget(enabled=privacy.enabled, epsilon=1.0, delta=0.1 / rows,
                         accountant="rdp", max_grad_norm=privacy.max_grad_norm)
    try:
        fit = gen.fit(table, plan.spec, budget, seed=seed)
    except UnsupportedModuleError as exc:
        raise PrivacyError(f"train.{plan.family}: Opacus cannot train its network privately: "
                           f"{str(exc).strip().splitlines()[0]}") from None
    except Exception as exc:  # any failure here is the plan's, reported as one line
        raise PrivacyError(f"preflight dry run of {plan.family} failed: {type(exc).__name__}: "
                           f"{exc}") from exc
    if not math.isfinite(fit.final_loss):
        raise PrivacyError(f"preflight dry run of {plan.family}: the loss is not finite; lower "
                           f"train.{plan.family}'s learning rate")
    return fit.seconds


# Words for the dry run's random texts: their number, not their meaning, is what it tests.
_WORDS = ("the", "order", "arrived", "late", "and", "the", "screen", "was", "cracked", "so",
          "I", "asked", "for", "a", "refund", "thanks", "for", "the", "quick", "reply", "my",
          "account", "still", "shows", "the", "old", "address")


def random_table(spec: TableSpec, n: int, seed: int, words: int) -> pd.DataFrame:
    """``n`` random rows of ``spec``: each category, number and text length within what the
    spec allows (texts of ``words`` words), none drawn from any record."""
    rng = np.random.default_rng(seed)
    columns = {}
    for f in spec.fields:
        if f.kind == "categorical":
            columns[f.name] = rng.choice(list(f.values), n) if f.values else [None] * n
        elif f.kind == "numeric":
            columns[f.name] = rng.integers(int(f.low), int(f.high) + 1, n) if f.integer \
                else rng.uniform(f.low, f.high, n)
        elif f.kind == "image":  # uniform noise of the declared shape (issue 14)
            columns[f.name] = pd.Series(list(rng.integers(0, 256, (n, *f.shape), np.uint8)),
                                        dtype=object)
        else:
            columns[f.name] = [" ".join(rng.choice(_WORDS, words)) for _ in range(n)]
    return pd.DataFrame(columns)
