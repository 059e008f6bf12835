"""Privacy events and their composition, shared by every family and the domain stage.

An event is a JSON-able dict, one mechanism run on the private records:

- ``{"kind": "gaussian", "sigma": σ, "q": q, "steps": T}``: T runs of a Gaussian mechanism
  of L2 sensitivity 1 and noise multiplier σ on a Poisson sample of rate q (DP-SGD: q < 1; a
  noisy count or marginal: q = 1, the noise std divided by the sensitivity).
- ``{"kind": "zcdp", "rho": ρ}``: any ρ-zCDP mechanism (Bun & Steinke 2016), e.g. the
  exponential mechanism with parameter ε₀ is ε₀²/8-zCDP (Cesar & Rogers 2021).

``epsilon`` composes them by one accountant: Opacus' PRV when every event is Gaussian (the
tightest), else Rényi DP (a ρ-zCDP event adds α·ρ at order α). ``epsilon_check`` is the second
opinion from an independent implementation, Google's dp-accounting (PLD for Gaussian-only
histories, its RDP accountant otherwise; a ρ-zCDP event has the Rényi curve of a Gaussian of
σ = 1/√(2ρ), so that accountant takes it as one).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import numpy as np

# Opacus' default orders plus large ones for the small-ε regime.
ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512]


def gaussian(sigma: float, q: float = 1.0, steps: int = 1) -> dict:
    return {"kind": "gaussian", "sigma": float(sigma), "q": float(q), "steps": int(steps)}


def zcdp(rho: float) -> dict:
    return {"kind": "zcdp", "rho": float(rho)}


def _gaussians(events: Iterable[dict]) -> list[tuple[float, float, int]]:
    return [(e["sigma"], e["q"], e["steps"]) for e in events
            if e["kind"] == "gaussian" and e["steps"] > 0]


def _rho(events: Iterable[dict]) -> float:
    return sum(e["rho"] for e in events if e["kind"] == "zcdp")


def epsilon(events: list[dict], delta: float, accountant: str = "prv") -> float:
    """ε at ``delta`` of all ``events`` composed; PRV only when all are Gaussian."""
    gauss, rho = _gaussians(events), _rho(events)
    if not gauss and rho == 0:
        return 0.0
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        # PRV at sampling rate 1 takes log(0) on a branch it then discards; RDP warns when the
        # best order is its largest, which only loosens (never lowers) the bound.
        warnings.simplefilter("ignore")
        if accountant == "prv" and rho == 0:
            from opacus.accountants import create_accountant

            acc = create_accountant("prv")
            acc.history = gauss
            return float(acc.get_epsilon(delta))
        from opacus.accountants.analysis import rdp as rdp_analysis

        curve = np.zeros(len(ORDERS))
        for sigma, q, steps in gauss:
            curve = curve + np.asarray(rdp_analysis.compute_rdp(
                q=q, noise_multiplier=sigma, steps=steps, orders=ORDERS))
        curve = curve + rho * np.asarray(ORDERS)
        eps, _ = rdp_analysis.get_privacy_spent(orders=ORDERS, rdp=curve, delta=delta)
        return float(eps)


def epsilon_check(events: list[dict], delta: float) -> float:
    """The same composition by dp-accounting (an independent implementation)."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    parts = []
    for sigma, q, steps in _gaussians(events):
        step = dp_event.GaussianDpEvent(sigma) if q >= 1 else dp_event.PoissonSampledDpEvent(
            q, dp_event.GaussianDpEvent(sigma))
        parts.append(dp_event.SelfComposedDpEvent(step, steps))
    rho = _rho(events)
    if rho > 0:
        parts.append(dp_event.GaussianDpEvent(1 / math.sqrt(2 * rho)))
    if not parts:
        return 0.0
    acc = (pld_privacy_accountant.PLDAccountant() if rho == 0
           else rdp_privacy_accountant.RdpAccountant(ORDERS))
    acc.compose(dp_event.ComposedDpEvent(parts))
    return float(acc.get_epsilon(delta))


def bisect(eps: Callable[[float], float], target: float, *, increasing: bool) -> float:
    """The parameter x at which ``eps(x)`` just meets ``target`` (to 0.1 %): the smallest
    noise (``increasing`` false: ε falls as x grows) or the largest ρ (``increasing`` true)."""
    low, high = 0.0, 1.0
    too_far = (lambda x: eps(x) > target) if not increasing else (lambda x: eps(x) <= target)
    while too_far(high):  # bracket first
        low, high = high, 2 * high
        if high > 1e7:
            raise ValueError(f"ε {target:g} is out of reach")
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        if increasing:
            low, high = (mid, high) if eps(mid) <= target else (low, mid)
        else:
            low, high = (mid, high) if eps(mid) > target else (low, mid)
    return low if increasing else high


def rho_for(target_epsilon: float, delta: float, prior: list[dict]) -> float:
    """The largest ρ a zCDP mechanism may spend so that it, composed with ``prior``, stays
    within ``target_epsilon`` at ``delta`` (Rényi accounting). ValueError if ``prior`` alone
    reaches the target."""
    if epsilon(prior, delta, "rdp") >= target_epsilon:
        raise ValueError(f"the releases before this one already reach ε {target_epsilon:g}")
    return bisect(lambda r: epsilon([*prior, zcdp(r)], delta, "rdp"), target_epsilon,
                  increasing=True)


def noise_for(target_epsilon: float, delta: float, prior: list[dict], q: float, steps: int,
              accountant: str = "prv") -> float:
    """The least DP-SGD noise multiplier σ for ``steps`` at sample rate ``q`` that, composed
    with ``prior``, stays within ``target_epsilon`` at ``delta``."""
    if epsilon(prior, delta, accountant) >= target_epsilon:
        raise ValueError(f"the releases before this one already reach ε {target_epsilon:g}")
    return bisect(lambda s: epsilon([*prior, gaussian(s, q, steps)], delta, accountant),
                  target_epsilon, increasing=False)
