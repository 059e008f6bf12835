"""The ε of one training run: the family's mechanism composed with the Gaussian releases that
estimated its released contract's value domains (``tasks.domain``), by the training accountant
(``models.accounting``: Opacus' PRV or RDP), cross-checked by Google's privacy-loss-distribution
accountant (dp-accounting).

A Gaussian count release of L2 sensitivity 1 is DP-SGD's step without subsampling, so both
accountants take it as one more history entry (σ, sampling rate 1, count). Thresholding observed
categories adds a δ outside either accountant (partition selection: Korolova et al. 2009,
Wilkins et al. 2024); it is subtracted from the run's δ before ε is read off.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import accounting
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


def _remaining(delta: float, spend: DomainSpend) -> float:
    if not delta > spend.delta:
        raise PrivacyError(f"δ {delta:.3g} does not cover the {spend.delta:.3g} that "
                           "thresholding observed categories takes; raise train.privacy."
                           "target_delta or lower train.privacy.domain_share")
    return delta - spend.delta


def events(sgd: Step | None, spend: DomainSpend) -> list[dict]:
    """DP-SGD ``sgd`` (None: not trained yet) and ``spend`` as ``models.accounting`` events."""
    out = [accounting.gaussian(*sgd)] if sgd and sgd[2] > 0 else []
    return out + ([accounting.gaussian(spend.noise_multiplier, 1.0, spend.releases)]
                  if spend.releases else [])


def epsilon(accountant: str, sgd: Step | None, spend: DomainSpend, delta: float) -> float:
    """ε at total ``delta`` of DP-SGD (``sgd``; None: not trained yet) composed with ``spend``,
    by ``models.accounting``'s accountant ``accountant`` ("prv" or "rdp")."""
    history = events(sgd, spend)
    return accounting.epsilon(history, _remaining(delta, spend), accountant) if history else 0.0


def pld_epsilon(sgd: Step | None, spend: DomainSpend, delta: float) -> float:
    """The same composition by dp-accounting's PLD accountant: an independent implementation."""
    history = events(sgd, spend)
    return accounting.epsilon_check(history, _remaining(delta, spend)) if history else 0.0


def domain_sigma(accountant: str, releases: int, threshold_delta: float, family: list[dict],
                 target_epsilon: float, delta: float) -> float:
    """The least noise σ at which ``releases`` Gaussian releases (and ``threshold_delta``),
    composed with the ``family``'s planned events (``models.base.Plan``), keep the run within
    ``target_epsilon`` at ``delta``. The family gets its share first; the domains get what
    composition leaves, which is far more than a plain split: Gaussian mechanisms compose in
    quadrature, not by adding their ε."""
    remaining = _remaining(delta, DomainSpend(0.0, releases, threshold_delta))
    try:
        return accounting.noise_for(target_epsilon, remaining, family, 1.0, releases,
                                    accountant)
    except ValueError:
        raise PrivacyError(f"train.privacy.domain_share: the family's share alone reaches "
                           f"train.privacy.target_epsilon={target_epsilon:g}; raise the "
                           "share") from None
