"""``privgen budget``: what every release on the same people has spent, from the ledger in
the MLflow store (``tasks.ledger``)."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.table import Table

from flows.cli_console import out


def _finite(value):
    """JSON has no ∞: a non-private release's unbounded ε is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _eps(value: float | None) -> str:
    if value is None:
        return "-"
    return ("∞" if value > 0 else "-∞") if math.isinf(value) else f"{value:.3f}"


def budget(
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="One population: its key (pop-…) or its data's source sha256, or a "
                          "prefix of either.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output; an "
                                          "unbounded ε (a non-private release) is null.")] = False,
    lifetime: Annotated[float | None, typer.Option(
        "--lifetime", min=0.0, help="Compare with this lifetime budget instead of the "
                                    "train.privacy.lifetime_budget the newest run of each "
                                    "population ran under.")] = None,
) -> None:
    """Per population of data subjects (the people behind a run's data, keyed without naming
    anyone): the ε of every DP release on them composed by one accountant, a second
    accountant's recomputation, the plain sum of the releases' own ε, and what is left of the
    lifetime budget (train.privacy.lifetime_budget)."""
    from tasks import ledger_store
    from tasks.errors import ConfigError

    rows = ledger_store.budget(dataset, lifetime)
    if dataset and not rows:
        raise ConfigError(f"--dataset {dataset}: no population key or source sha256 in the "
                          "ledger starts with it; run privgen budget to list them")
    if as_json:
        out.print_json(json.dumps(_finite(rows)))
        return
    if not rows:
        out.print("no releases recorded in the ledger yet; privgen run records each one")
        return
    table = Table()
    table.add_column("population", no_wrap=True)  # a key must stay whole to be copied
    for header in ("releases", "composed ε", "check ε", "plain sum", "δ", "lifetime", "left"):
        table.add_column(header, justify="right")
    for r in rows:
        left = r["left"]
        table.add_row(r["population"], str(r["releases"]), _eps(r["epsilon"]),
                      _eps(r["epsilon_check"]), _eps(r["plain_sum"]), f"{r['delta']:.1e}",
                      _eps(r["lifetime_budget"]),
                      "-" if left is None else f"[red]{_eps(left)}[/]" if left < 0
                      else _eps(left))
    out.print(table)
    for r in rows:
        out.print(f"{r['population']}: people by {r['basis']}; composed by {r['accountant']}; "
                  f"data sha256 {', '.join(d[:12] for d in r['source_digests'])}")
        for line in notes(r):
            out.print(f"  {line}")


def notes(row: dict) -> list[str]:
    """What a budget row's figure includes beyond finished runs on one population: links
    across key rotations, releases counted conservatively, reservations."""
    lines = []
    if row["linked"]:
        lines.append(f"the same people under earlier key(s), linked while the key was held: "
                     f"{', '.join(row['linked'])}")
    if row.get("overlap"):
        lines.append(f"people also in earlier population(s), found by their subject filters "
                     f"(an erasure or another extract of the same people): "
                     f"{', '.join(row['overlap'])}; their releases are composed here")
    if row["assumed"]:
        keys = sorted({r["key_id"] for r in row["runs"] if r["population"] in row["assumed"]})
        lines.append(f"[yellow]counted conservatively[/]: the releases of "
                     f"{', '.join(row['assumed'])} (same dataset, under key(s) "
                     f"{', '.join(keys)} no longer held, so their people cannot be matched) "
                     "are composed as if every data subject had been in them")
    if row["reserved"]:
        lines.append(f"{row['reserved']} release(s) reserved by runs that did not finish "
                     "(crashed, or still running), counted at their planned ε")
    return lines


def promotion_line(name: str, version: str) -> str | None:
    """What ``privgen promote`` shows of the ledger: the composed ε of the version's
    population now, against its lifetime budget."""
    from tasks import ledger_store

    row = ledger_store.of_version(name, version)
    if row is None:
        return None
    left = "" if row["left"] is None else (
        f", lifetime budget {row['lifetime_budget']:g} ({_eps(row['left'])} left)")
    return (f"its data subjects (population {row['population']}) have spent ε "
            f"{_eps(row['epsilon'])} composed over {row['releases']} release(s) (plain sum "
            f"{_eps(row['plain_sum'])}){left}")
