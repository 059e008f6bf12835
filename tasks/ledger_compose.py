"""The privacy ledger's arithmetic (issue 15): ledger entries' events composed by one accountant,
what a run about to start will bring its people to, and which entries one person can be in.
Pure: no tracking store, no Prefect (the entries come from ``tasks.ledger_store``).

An entry (one training run) holds ``events`` (``models.accounting`` events), ``epsilon``,
``delta``, ``threshold_delta``, ``private``, ``complete``, ``config_hash``, ``records``, and
``reserved`` when it is a run's reservation of its planned ε, written before anything is spent
and finalised with the spend at the end: a crashed run's reservation counts as spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from models import accounting


def compact(events: list[dict]) -> list[dict]:
    """``events`` in the fewest events that compose exactly alike: Gaussians at sampling rate 1
    fold into one (a composition of Gaussian mechanisms of sensitivity 1 is the Gaussian of
    1/σ² = Σ steps/σ², its privacy loss exactly), subsampled ones of the same (σ, q) add their
    steps, ρ-zCDP events add their ρ. Keeps a ledger entry a few events long (AIM measures
    once per round)."""
    full = sum(e["steps"] / e["sigma"] ** 2 for e in events
               if e["kind"] == "gaussian" and e["q"] >= 1 and e["steps"] > 0)
    sampled: dict[tuple[float, float], int] = {}
    for e in events:
        if e["kind"] == "gaussian" and e["q"] < 1 and e["steps"] > 0:
            sampled[(e["sigma"], e["q"])] = sampled.get((e["sigma"], e["q"]), 0) + e["steps"]
    rho = sum(e["rho"] for e in events if e["kind"] == "zcdp")
    out = [accounting.gaussian(1 / math.sqrt(full))] if full else []
    out += [accounting.gaussian(s, q, n) for (s, q), n in sorted(sampled.items())]
    return out + ([accounting.zcdp(rho)] if rho else [])


def _by_basic_composition(entry: dict) -> bool:
    """A reservation whose mechanism is not known yet (no earlier run of its config): it can
    only be counted at its planned (ε, δ), added on top of the accountant's figure."""
    return bool(entry.get("reserved")) and not entry["events"]


def compose(entries: list[dict], check: bool = True) -> dict:
    """The composed ε of ``entries`` (ledger entries of one population) by one accountant over
    the union of their events (``models.accounting.epsilon``: PRV when all are Gaussian, else
    Rényi DP), the second accountant's figure for the same events, and the plain sum of the
    entries' own ε, all at δ = the sum of their δ (what adding them up would claim; each entry's
    thresholding δ, outside any accountant, is taken off first). A reservation with no known
    events adds its planned ε (basic composition). A non-private entry makes every figure ∞.
    ``check`` False: no second accountant (``epsilon_check`` None; it takes seconds)."""
    delta = sum(e["delta"] for e in entries)
    summary = {"releases": len(entries), "delta": delta,
               "reserved": sum(bool(e.get("reserved")) for e in entries),
               "plain_sum": sum(e["epsilon"] for e in entries)}
    if any(not e["private"] for e in entries):
        return summary | {"epsilon": math.inf, "epsilon_check": math.inf,
                          "accountant": "none: a non-private release"}
    exact = [e for e in entries if not _by_basic_composition(e)]
    added = sum(e["epsilon"] for e in entries if _by_basic_composition(e))
    events = compact([ev for e in exact for ev in e["events"]])
    left = sum(e["delta"] - e["threshold_delta"] for e in exact)
    gaussian_only = all(ev["kind"] == "gaussian" for ev in events)
    return summary | {
        "epsilon": (accounting.epsilon(events, left, "prv") if exact else 0.0) + added,
        "epsilon_check": None if not check else (
            accounting.epsilon_check(events, left) if exact else 0.0) + added,
        "accountant": ("PRV (Opacus)" if gaussian_only else "Rényi DP (Opacus)")
        + "; check: dp-accounting " + ("PLD" if gaussian_only else "RDP")
        + ("; plus reservations at their planned ε" if added else "")}


def same_config(run: dict, known: list[dict]) -> dict | None:
    """The newest finished entry of ``known`` that ran ``run``'s config on as many records:
    what ``run`` will spend (calibration is deterministic), else None."""
    same = [e for e in known if e["config_hash"] == run["config_hash"]
            and e["records"] == run["records"] and e["complete"]]
    return same[-1] if same else None


def forecast(prior: list[dict], run: dict, known: list[dict] | None = None) -> dict:
    """What people who were in the ``prior`` releases will have spent after a run that is
    about to start: ``run`` holds its ``config_hash``, ``records``, ``private``,
    ``target_epsilon`` and ``delta``. A run of the same config on as many records as an
    earlier entry (of ``known``, default ``prior``) spends what that one did, composed
    exactly; otherwise the bound of basic composition: what the prior releases compose to,
    plus the run's own target ε, at the sum of the δ."""
    if not run["private"]:
        return {"epsilon": math.inf, "how": "the run is not private"}
    same = same_config(run, prior if known is None else known)
    if same:
        composed = compose([*prior, same], check=False)
        return {"epsilon": composed["epsilon"], "delta": composed["delta"],
                "how": f"as run {same['run_id']} of the same config spent"}
    before = compose(prior, check=False)
    return {"epsilon": before["epsilon"] + run["target_epsilon"],
            "delta": before["delta"] + run["delta"],
            "how": "prior releases composed plus this run's target ε (basic composition)"}


def exposures(people: Iterable[str], prior: list[dict],
              holds: Callable[[dict, list[str]], np.ndarray]) -> list[list[dict]]:
    """The sets of ``prior`` entries that some of ``people`` were in, the largest only (a
    person in fewer of them has spent less): what the most exposed among them has spent is
    one of these composed. ``holds(entry, people)``: whether each is in the entry's data (a
    Bloom filter's answer may over-report, which only makes the forecast safer)."""
    people = list(people)
    if not people or not prior:
        return [[]]
    inside = np.column_stack([holds(e, people) for e in prior])
    signatures = {tuple(np.flatnonzero(row)) for row in inside}
    largest = [s for s in signatures if not any(set(s) < set(t) for t in signatures)]
    return [[prior[i] for i in s] for s in sorted(largest)]


def refusal(population: str, lifetime: float, prior: list[dict], spent: float,
            ahead: dict) -> str | None:
    """The one line a run that would cross ``lifetime`` stops with; None when it fits."""
    if ahead["epsilon"] <= lifetime:
        return None
    pending = sum(bool(e.get("reserved")) for e in prior)
    reserved = f", {pending} of them reserved by runs not finished" if pending else ""
    return (f"train.privacy.lifetime_budget={lifetime:g}: the most exposed data subject of "
            f"this run (population {population}) has spent ε {spent:.3g} over {len(prior)} "
            f"release(s){reserved}, and this run would bring them to ε {ahead['epsilon']:.3g} "
            f"({ahead['how']}); no budget was spent. Lower train.privacy.target_epsilon, or "
            "raise the lifetime budget with a written reason (see privgen budget)")


def lineages(entries: list[dict]) -> list[list[dict]]:
    """``entries`` grouped by lineage: one population, and the populations its entries were
    linked to (``links``: ``exact``, the same people under an earlier key; ``assumed``,
    releases under a destroyed key counted as if everyone was in them; ``overlap``, earlier
    populations the run's most exposed person was in, such as the population before an
    erasure removed someone). A group's composition is then an upper bound for each of its
    people: exact for the most exposed one, conservative for the others.
    Each group oldest first, groups in order of their first entry."""
    parent: dict[str, str] = {}

    def root(p: str) -> str:
        while parent.setdefault(p, p) != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for e in entries:
        for other in [*e.get("links", {}).get("exact", []),
                      *e.get("links", {}).get("assumed", []),
                      *e.get("links", {}).get("overlap", [])]:
            parent[root(other)] = root(e["population"])
    groups: dict[str, list[dict]] = {}
    for e in entries:
        groups.setdefault(root(e["population"]), []).append(e)
    return list(groups.values())
