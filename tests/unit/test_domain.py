"""Released domains (issue 12, "a privacy leak through the contract"): observed category lists
and bounds are estimated under DP or refused, composed into ε, and listed in the datasheet."""

import numpy as np
import pandas as pd
import pytest

from models import accounting, base
from tasks import composition, datasheet, domain
from tasks.contract import ColumnSpec, DataContract, Domain, DType, Role
from tasks.errors import PrivacyError
from tasks.release import field_forms
from tasks.train import TrainConfig

N = 3000
JOBS = ["admin", "blue-collar", "technician", "services", "management"]


@pytest.fixture(scope="module")
def bank():
    """Ages 20-80 with one person of 104; five jobs and one that occurs once."""
    rng = np.random.default_rng(7)
    jobs = rng.choice(JOBS, N).tolist()
    jobs[11] = "astronaut"
    ages = rng.integers(20, 81, N)
    ages[5] = 104
    days = pd.date_range("2025-01-01", periods=N, freq="h").strftime("%Y-%m-%dT%H:%M:%S")
    return pd.DataFrame({"job": jobs, "age": ages, "when": days, "rating": rng.integers(1, 6, N)})


def _contract(observed=Domain.OBSERVED):
    c = ColumnSpec
    return DataContract(columns=(
        c(name="job", allowed=tuple(sorted({*JOBS, "astronaut"})), domain=observed),
        c(name="age", dtype=DType.INTEGER, role=Role.NUMERIC, min=20, max=104, domain=observed),
        c(name="when", dtype=DType.DATETIME, role=Role.DATETIME, earliest="2025-01-01",
          latest="2025-05-10", domain=observed),
        # A published scale: free, whatever the other columns are.
        c(name="rating", dtype=DType.INTEGER, role=Role.NUMERIC, min=1, max=5),
    ))


@pytest.fixture(scope="module")
def planned(bank):
    # The causal LM's calibration (its DP-SGD); a table family's is tested below.
    return domain.plan(_contract(), {}, list(bank.columns), TrainConfig(family="causal_lm"),
                       len(bank))


def _released(bank, planned, seed=1234):
    contract = _contract()
    spend = composition.DomainSpend.from_dict(planned["spend"])
    released, report = domain.estimate(bank, contract, spend, planned["threshold"],
                                       planned["needed"], seed)
    return planned, {s.name: s for s in released.columns}, report


def test_a_category_that_occurs_once_never_reaches_the_released_contract(bank, planned):
    for seed in range(5):
        _, specs, report = _released(bank, planned, seed)
        assert specs["job"].allowed == tuple(sorted(JOBS))  # the common ones survive
        assert specs["job"].domain is Domain.ESTIMATED
        assert report["estimated"]["job"]["categories_released"] == 5
    # ... nor a generated record: the grammar and the check only admit released values.
    form = field_forms([specs["job"]])["job"]
    assert not pd.Series(["astronaut"]).str.fullmatch(form.strip("^$"))[0]
    assert pd.Series(["technician"]).str.fullmatch(form.strip("^$"))[0]


def test_an_extreme_age_is_not_a_released_bound(bank, planned):
    _, specs, _ = _released(bank, planned)
    assert specs["age"].min == pytest.approx(20, abs=2)
    assert specs["age"].max == pytest.approx(80, abs=2)
    assert specs["age"].max < 104
    # Dates: the bounds are the data's spread, to a bin's width, never a far guess.
    assert pd.Timestamp("2024-09-01").date() <= specs["when"].earliest <= pd.Timestamp(
        "2025-01-15").date()
    assert pd.Timestamp("2025-04-20").date() <= specs["when"].latest <= pd.Timestamp(
        "2025-08-01").date()
    assert (specs["rating"].min, specs["rating"].max) == (1, 5)
    assert specs["rating"].domain is Domain.PUBLIC


def test_refuse_mode_names_the_columns_in_one_line(bank):
    cfg = TrainConfig.model_validate({"privacy": {"observed_domains": "refuse"}})
    with pytest.raises(PrivacyError) as err:
        domain.plan(_contract(), {}, list(bank.columns), cfg, len(bank))
    msg = str(err.value)
    assert "\n" not in msg and "job (allowed)" in msg and "age (min, max)" in msg
    assert "when (earliest, latest)" in msg and "domain: public" in msg
    assert "rating" not in msg and "astronaut" not in msg and "104" not in msg
    # Declared public: nothing to refuse, nothing to pay.
    planned = domain.plan(_contract(Domain.PUBLIC), {}, list(bank.columns), cfg, len(bank))
    assert planned["spend"]["releases"] == 0 and planned["sgd_epsilon"] == 8.0


def test_only_what_generation_relies_on_is_estimated():
    contract = DataContract(columns=(
        ColumnSpec(name="age", dtype=DType.INTEGER, role=Role.QUASI_IDENTIFIER, min=18,
                   max=95, domain=Domain.OBSERVED),
        ColumnSpec(name="zip", role=Role.QUASI_IDENTIFIER, allowed=("02138", "02139"),
                   domain=Domain.OBSERVED),
        ColumnSpec(name="code", role=Role.ID, allowed=("a", "b"), domain=Domain.OBSERVED),
    ))
    ops = {"age": "generalize", "zip": "generalize", "code": "pseudonymize"}
    # Bands of a generalized age are listed between its bounds; a zip prefix lists nothing.
    assert domain.relied_on(contract, ops, ["age", "zip", "code"]) == {"age": ["min", "max"]}
    released, report = domain.estimate(
        pd.DataFrame({"age": ["30-39"] * 500 + ["40-49"] * 500, "zip": ["021**"] * 1000,
                      "code": ["x"] * 1000}), contract, composition.DomainSpend(5.0, 3), 30.0,
        {"age": ["min", "max"]}, 0)
    specs = {s.name: s for s in released.columns}
    assert specs["zip"].allowed is None and specs["code"].allowed is None  # never released
    assert report["withheld"] == {"zip": ["allowed"], "code": ["allowed"]}
    assert 29 <= specs["age"].min <= 31 and 39 <= specs["age"].max <= 41


def test_composed_epsilon_is_within_target_below_the_plain_sum_and_cross_checked(planned):
    cfg = TrainConfig()
    spend = composition.DomainSpend.from_dict(planned["spend"])
    assert spend.releases == 1 + 2 * 3  # job; age and when: ladder and two refinements
    from opacus.accountants.utils import get_noise_multiplier

    from tasks.preflight import plan_sampling
    from tasks.train import resolve_delta

    delta = resolve_delta(cfg.privacy, N)
    q, steps = plan_sampling(N, cfg)
    sigma = get_noise_multiplier(target_epsilon=planned["sgd_epsilon"], target_delta=delta,
                                 sample_rate=q, steps=steps, accountant="prv")
    total = composition.epsilon("prv", (sigma, q, steps), spend, delta)
    domain_alone = composition.epsilon("prv", None, spend, delta)
    sgd_alone = composition.epsilon("prv", (sigma, q, steps), composition.DomainSpend(), delta)
    assert total <= cfg.privacy.target_epsilon
    assert total > sgd_alone  # the domains were paid for
    assert total < sgd_alone + domain_alone  # composition beats adding the parts up
    # DP-SGD gets the stated 90 %; the domains get what composition leaves of the rest.
    assert sgd_alone == pytest.approx(0.9 * 8.0, rel=0.02)
    assert total == pytest.approx(8.0, rel=0.02)
    pld = composition.pld_epsilon((sigma, q, steps), spend, delta)
    assert pld == pytest.approx(total, rel=0.03)


def test_the_domains_are_calibrated_against_the_family_training_will_use(bank, planned):
    """auto on a table without text is AIM: its ρ (Rényi accounting), not the causal LM's
    DP-SGD, is what the domains compose with; and its plan carries the table's shape only."""
    cfg = TrainConfig()
    # (A raw datetime column has no finite domain for a table model: auto would pick the LM.)
    aim = domain.plan(_contract(), {}, ["job", "age", "rating"], cfg, len(bank))
    assert aim["family"] == "aim" and "no text" in aim["family_reason"]
    assert planned["family"] == "causal_lm" and planned["shape"] is None
    spend = composition.DomainSpend.from_dict(aim["spend"])
    delta = 1 / (10 * N) - spend.delta  # what thresholding leaves the family
    rho = accounting.rho_for(aim["sgd_epsilon"], delta, [])
    releases = accounting.gaussian(spend.noise_multiplier, 1.0, spend.releases)
    total = accounting.epsilon([accounting.zcdp(rho), releases], delta, "rdp")
    assert total <= cfg.privacy.target_epsilon
    assert total == pytest.approx(cfg.privacy.target_epsilon, rel=0.01)
    # Not the causal LM's split: the same releases get another noise for another mechanism.
    assert spend.noise_multiplier != pytest.approx(planned["spend"]["noise_multiplier"],
                                                   rel=0.01)
    shape = {f["name"]: f for f in aim["shape"]["fields"]}
    assert list(shape["job"]["values"]) == [f"value {i}" for i in range(6)]  # counts, no value
    assert (shape["age"]["low"], shape["age"]["high"]) == (0.0, 1.0)


def test_a_family_that_states_no_plan_leaves_the_domains_their_share_alone(monkeypatch,
                                                                          planned):
    from models.hybrid import Hybrid

    monkeypatch.setattr(Hybrid, "plan", base.Generator.plan)  # the base class's: no plan
    cfg = TrainConfig(family="hybrid")
    spend, _, _ = domain.calibrate(planned["needed"], _contract(), cfg, N, "hybrid")
    alone = composition.epsilon("prv", None, spend, 1 / (10 * N))
    assert alone <= 0.1 * 8.0 and alone == pytest.approx(0.1 * 8.0, rel=0.01)


def test_a_share_that_leaves_nothing_for_the_domains_is_refused():
    with pytest.raises(PrivacyError, match="domain_share"):
        composition.domain_sigma("prv", 3, 1e-7, [accounting.gaussian(0.5, 0.1, 1000)], 1.0,
                                 1e-5)


def test_datasheet_lists_declared_and_paid_for_values_never_the_unreleased_ones(bank, planned):
    _, _, report = _released(bank, planned)
    report["share"] = 0.1
    train = {"epsilon": 7.99, "delta": 3e-5, "accountant": "prv", "private": True,
             "sample_rate": 0.02, "steps": 470, "epochs": 10, "noise_multiplier": 0.7,
             "epsilon_sgd": 7.93, "domain_spend": {"noise_multiplier": 13.6, "releases": 7,
                                                   "delta": 1.6e-6}}
    sheet = datasheet.build(name="m", version="1", train=train, evaluation={}, verdicts={},
                            lineage={"domains": report}, privacy={}, model={}, control=None)
    dom = sheet["released_domains"]
    assert dom["declared_public"] == {"rating": ["min", "max"]}
    assert set(dom["paid_for"]) == {"job", "age", "when"}
    assert "7 Gaussian domain releases" in sheet["privacy"]["composition"]
    text = datasheet.markdown(sheet)
    assert "declared public by the data owner: rating (min, max)" in text
    assert "  - job (allowed): Gaussian thresholded histogram" in text
    assert "5 categories released" in text
    assert "astronaut" not in text and "104" not in text
