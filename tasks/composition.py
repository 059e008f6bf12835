"""The ε of one training run: DP-SGD composed with the Gaussian releases that estimated its
released contract's value domains (``tasks.domain``), by the training accountant (Opacus' PRV or
RDP), cross-checked by Google's privacy-loss-distribution accountant (dp-accounting).

A Gaussian count release of L2 sensitivity 1 is DP-SGD's step without subsampling, so both
accountants take it as one more history entry (σ, sampling rate 1, count). Thresholding observed
categories adds a δ outside either accountant (partition selection: Korolova et al. 2009,
Wilkins et al. 2024); it is subtracted from the run's δ before ε is read off.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from opacus.accountants import create_accountant

from tasks.errors import PrivacyError

Step = tuple[float, float, int]  # (noise multiplier σ, sampling rate q, steps)


@dataclass(frozen=True)
class DomainSpend:
    """What estimating the released contract's domains cost: ``releases`` Gaussian histograms,
    each of L2 sensitivity 1 and noise σ = ``noise_multiplier``, plus ``delta`` from
    thresholding categories seen in the private data."""

    noise_multiplier: float = 0.0
    releases: int = 0
    delta: float = 0.0

    @classmethod
    def from_dict(cls, d: dict | None) -> DomainSpend:
        return cls(**d) if d else cls()

    def history(self) -> list[Step]:
        return [(self.noise_multiplier, 1.0, self.releases)] if self.releases else []


def _remaining(delta: float, spend: DomainSpend) -> float:
    if not delta > spend.delta:
        raise PrivacyError(f"δ {delta:.3g} does not cover the {spend.delta:.3g} that "
                           "thresholding observed categories takes; raise train.privacy."
                           "target_delta or lower train.privacy.domain_share")
    return delta - spend.delta


def epsilon(accountant: str, sgd: Step | None, spend: DomainSpend, delta: float) -> float:
    """ε at total ``delta`` of DP-SGD (``sgd``; None: not trained yet) composed with ``spend``,
    by the Opacus accountant named ``accountant`` ("prv" or "rdp")."""
    history = ([sgd] if sgd and sgd[2] > 0 else []) + spend.history()
    if not history:
        return 0.0
    acc = create_accountant(accountant)
    acc.history = history
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        # PRV at sampling rate 1 takes log(0) on a branch it then discards; RDP warns when the
        # best order is its largest, which only loosens (never lowers) the bound.
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(_remaining(delta, spend)))


def pld_epsilon(sgd: Step | None, spend: DomainSpend, delta: float) -> float:
    """The same composition by dp-accounting's PLD accountant: an independent implementation."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    events = []
    if sgd and sgd[2] > 0:
        step = dp_event.PoissonSampledDpEvent(sgd[1], dp_event.GaussianDpEvent(sgd[0]))
        events.append(dp_event.SelfComposedDpEvent(step, sgd[2]))
    if spend.releases:
        events.append(dp_event.SelfComposedDpEvent(
            dp_event.GaussianDpEvent(spend.noise_multiplier), spend.releases))
    if not events:
        return 0.0
    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(dp_event.ComposedDpEvent(events))
    return float(accountant.get_epsilon(_remaining(delta, spend)))


def domain_sigma(accountant: str, releases: int, threshold_delta: float, sgd: Step,
                 target_epsilon: float, delta: float) -> float:
    """The least noise σ at which ``releases`` Gaussian releases (and ``threshold_delta``),
    composed with DP-SGD ``sgd``, keep the run within ``target_epsilon`` at ``delta``. DP-SGD
    gets its share first; the domains get what composition leaves, which is far more than a
    plain split: Gaussian mechanisms compose in quadrature, not by adding their ε."""
    if epsilon(accountant, sgd, DomainSpend(1e6, releases, threshold_delta), delta) \
            >= target_epsilon:
        raise PrivacyError(f"train.privacy.domain_share: DP-SGD's share alone reaches "
                           f"train.privacy.target_epsilon={target_epsilon:g}; raise the share")
    return _bisect(lambda s: epsilon(accountant, sgd, DomainSpend(s, releases, threshold_delta),
                                     delta), target_epsilon)


def _bisect(eps, target: float) -> float:
    """The smallest σ (to 0.1 %) with eps(σ) ≤ target."""
    low, high = 0.0, 1.0
    while eps(high) > target:  # a plain Gaussian at σ → 0 has unbounded ε: bracket first
        low, high = high, 2 * high
        if high > 1e6:
            raise PrivacyError(f"ε {target:g} is out of reach at any noise level")
    while high - low > 1e-3 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if eps(mid) > target else (low, mid)
    return high
