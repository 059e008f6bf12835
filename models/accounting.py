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

import functools
import math
import warnings
from collections.abc import Callable, Iterable

import numpy as np

# Opacus' default orders plus large ones for the small-ε regime.
ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 128, 256, 512]
# Its whole orders: a subsampled Gaussian's Rényi divergence at a fractional order is a slow
# series (90 % of an RDP ε's time), so σ searches take their first guess from these. Fewer
# orders only loosen the bound: the guess's σ is never below the one ``ORDERS`` gives.
ROUGH = [a for a in ORDERS if float(a).is_integer()]


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
    """ε at ``delta`` of all ``events`` composed; PRV only when all are Gaussian. ``accountant``
    "rough": Rényi DP at ``ROUGH`` orders, an upper bound for first guesses."""
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
        return _rdp_epsilon(gauss, rho, delta, ORDERS if accountant != "rough" else ROUGH)


def used(events: Iterable[dict], accountant: str = "prv") -> str:
    """The accountant ``epsilon`` applies to ``events``: "rdp" where a ρ-zCDP event is among
    them (PRV takes Gaussians only), else ``accountant``."""
    return "rdp" if accountant == "prv" and _rho(list(events)) > 0 else accountant


def _rdp_epsilon(gauss: list[tuple[float, float, int]], rho: float, delta: float,
                 orders: list[float]) -> float:
    from opacus.accountants.analysis import rdp as rdp_analysis

    curve = np.zeros(len(orders))
    for sigma, q, steps in gauss:
        curve = curve + np.asarray(rdp_analysis.compute_rdp(
            q=q, noise_multiplier=sigma, steps=steps, orders=orders))
    curve = curve + rho * np.asarray(orders)
    eps, _ = rdp_analysis.get_privacy_spent(orders=orders, rdp=curve, delta=delta)
    return float(eps)


def epsilon_check(events: list[dict], delta: float) -> float:
    """The same composition by dp-accounting (an independent implementation)."""
    import logging

    from dp_accounting import dp_event

    # dp-accounting drops an RDP order it cannot evaluate with an absl warning per order (the
    # bound stays valid over the others); on the console that reads as a fault.
    logging.getLogger("absl").setLevel(logging.ERROR)
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


def bisect(eps: Callable[[float], float], target: float, *, increasing: bool,
           tol: float = 1e-3) -> float:
    """The parameter x at which ``eps(x)`` just meets ``target`` (to ``tol`` relative): the
    smallest noise (``increasing`` false: ε falls as x grows) or the largest ρ (``increasing``
    true)."""
    low, high = 0.0, 1.0
    too_far = (lambda x: eps(x) > target) if not increasing else (lambda x: eps(x) <= target)
    while too_far(high):  # bracket first
        low, high = high, 2 * high
        if high > 1e7:
            raise ValueError(f"ε {target:g} is out of reach")
    while high - low > tol * high:
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
    with ``prior``, stays within ``target_epsilon`` at ``delta`` (to 0.1 %, as ``bisect``).
    Cached: the domain plan, preflight and ``fit`` ask the same question in one process."""
    return _noise_for(float(target_epsilon), float(delta), _frozen(prior), float(q), int(steps),
                      accountant)


def _frozen(events: Iterable[dict]) -> tuple:
    return tuple(tuple(sorted(e.items())) for e in events)


@functools.lru_cache(maxsize=256)
def _noise_for(target: float, delta: float, prior: tuple, q: float, steps: int,
               accountant: str) -> float:
    events = [dict(e) for e in prior]
    # Rough RDP bounds the exact ε from above: only a prior it puts at the target is checked.
    if epsilon(events, delta, "rough") >= target and epsilon(events, delta, accountant) >= target:
        raise ValueError(f"the releases before this one already reach ε {target:g}")

    def eps(sigma: float, by: str = accountant) -> float:
        return epsilon([*events, gaussian(sigma, q, steps)], delta, by)

    # An ε by PRV takes 0.2–1 s on 2 cores, by RDP 0.05–0.3 s, and bisection a dozen or more
    # of them. The rough RDP bound is looser, so its σ sits a little above the answer: start
    # there, with its slope, and close in (``least``).
    try:
        guess = bisect(lambda s: eps(s, "rough"), target, increasing=False, tol=0.02)
        slope = (math.log(eps(1.01 * guess, "rough")) - math.log(eps(guess, "rough"))) \
            / math.log(1.01)
    except ValueError:  # the rough bound of the prior alone passes the target; PRV's does not
        guess, slope = 1.0, -1.0
    return least(eps, target, guess, slope)


def least(eps: Callable[[float], float], target: float, guess: float, slope: float,
          tol: float = 1e-3) -> float:
    """The least x with ``eps(x)`` ≤ ``target`` (``eps`` falling in x), to ``tol`` relative as
    ``bisect`` finds it, in a handful of evaluations from a ``guess`` near it and ``slope``,
    an estimate of d log ε / d log x there. Secant steps in (log x, log ε), where a Gaussian
    mechanism's ε is close to a straight line, each aimed just past the root on the side of
    the bracket still far from it, so that both ends close in; bisection when a step fails
    to halve the bracket. Returns the bracket's upper end, whose ε met the target."""
    width = math.log1p(tol)
    lo: tuple[float, float] | None = None  # (log x, log ε/target > 0): too little noise
    hi: tuple[float, float] | None = None  # (log x, log ε/target ≤ 0)
    seen: list[tuple[float, float]] = []
    x, before = math.log(guess), math.inf
    while lo is None or hi is None or hi[0] - lo[0] > width:
        if not math.log(1e-7) < x < math.log(1e7):
            raise ValueError(f"ε {target:g} is out of reach")
        e = eps(math.exp(x))
        point = (x, math.log(e / target) if e > 0 else -math.inf)
        if point[1] > 0:
            lo = point if lo is None or x > lo[0] else lo
        else:
            hi = point if hi is None or x < hi[0] else hi
        seen.append(point)
        x = _next(lo, hi, seen, slope, width, before)
        before = hi[0] - lo[0] if lo and hi else math.inf
    return math.exp(hi[0])


def _next(lo, hi, seen, slope, width, before) -> float:
    """The next log x for ``least`` to evaluate."""
    if lo and hi and hi[0] - lo[0] > before / 2:  # the last step did not halve the bracket
        return (lo[0] + hi[0]) / 2
    a, b = (lo, hi) if lo and hi else (seen[-2], seen[-1]) if len(seen) > 1 else (seen[-1], None)
    finite = math.isfinite(a[1]) and (b is None or math.isfinite(b[1]))
    if b is not None and finite and a[1] != b[1] and a[0] != b[0]:
        slope = (b[1] - a[1]) / (b[0] - a[0])
    if not finite or not slope < 0:  # no usable slope: bisect, or step outwards
        if lo and hi:
            return (lo[0] + hi[0]) / 2
        return seen[-1][0] + (0.1 if hi is None else -0.1) * 2 ** len(seen)
    root = a[0] - a[1] / slope
    if lo and hi:  # just past the root towards the end farther from it, inside the bracket
        towards_hi = hi[0] - root > root - lo[0]
        margin = min(0.05 * (hi[0] - lo[0]), 0.1 * width)
        return min(max(root + (0.45 if towards_hi else -0.45) * width, lo[0] + margin),
                   hi[0] - margin)
    return root + (0.45 if hi is None else -0.45) * width
