"""The σ search (``accounting.noise_for``): the same answer as plain bisection over the PRV
accountant, in a few PRV evaluations instead of a dozen (issue 13: 10–16 s a search)."""

import pytest

from models import accounting


def _prv_calls(monkeypatch) -> list:
    calls, real = [], accounting.epsilon

    def counted(events, delta, accountant="prv"):
        if accountant == "prv":
            calls.append(events)
        return real(events, delta, accountant)

    monkeypatch.setattr(accounting, "epsilon", counted)
    return calls


@pytest.mark.parametrize("target, prior, q, steps", [
    (1.0, [], 1 / 37, 296),  # a table family's DP-SGD
    (8.0, [accounting.gaussian(3.0, 1.0, 7)], 1.0, 7),  # domain releases after a prior
])
def test_noise_for_finds_the_old_bisection_sigma_in_fewer_prv_evaluations(
        monkeypatch, target, prior, q, steps):
    accounting._noise_for.cache_clear()
    calls = _prv_calls(monkeypatch)
    sigma = accounting.noise_for(target, 1e-5, prior, q, steps)
    searched = len(calls)

    def eps(s):
        return accounting.epsilon([*prior, accounting.gaussian(s, q, steps)], 1e-5)

    old = accounting.bisect(eps, target, increasing=False)  # the search before issue 13
    assert sigma == pytest.approx(old, rel=1e-3)
    assert eps(sigma) <= target  # meets the target, by the accountant itself
    assert eps(sigma / 1.002) > target  # and is the least that does, to the tolerance
    assert searched <= 6 < len(calls) - searched - 2  # bisection took twice as many


def test_noise_for_asks_each_question_once(monkeypatch):
    accounting._noise_for.cache_clear()
    calls = _prv_calls(monkeypatch)
    first = accounting.noise_for(2.0, 1e-5, [], 0.05, 100)
    before = len(calls)
    assert accounting.noise_for(2.0, 1e-5, [], 0.05, 100) == first and len(calls) == before


def test_noise_for_refuses_a_prior_that_already_reaches_the_target():
    with pytest.raises(ValueError, match="already reach"):
        accounting.noise_for(1.0, 1e-5, [accounting.gaussian(0.5, 1.0, 10)], 0.1, 100)


def test_rdp_search_matches_bisection_too():
    accounting._noise_for.cache_clear()
    prior = [accounting.zcdp(0.05)]  # a marginal family's part: Rényi accounting
    sigma = accounting.noise_for(4.0, 1e-5, prior, 0.1, 50)

    def eps(s):
        return accounting.epsilon([*prior, accounting.gaussian(s, 0.1, 50)], 1e-5, "rdp")

    assert sigma == pytest.approx(accounting.bisect(eps, 4.0, increasing=False), rel=1e-3)
    assert eps(sigma) <= 4.0


def test_the_accountant_named_is_the_one_that_composed():
    """PRV takes Gaussians only: with a zCDP event among them ε comes from Rényi DP, and the
    datasheet and tags must say so."""
    gauss, zcdp = accounting.gaussian(1.0, 0.1, 100), accounting.zcdp(0.05)
    assert accounting.used([gauss], "prv") == "prv"
    assert accounting.used([gauss, zcdp], "prv") == "rdp"
    assert accounting.used([gauss, zcdp], "rdp") == "rdp"
