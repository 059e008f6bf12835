"""Preflight per family (issue 13): each family's own plan (DP-SGD from its own epochs and batch
size, ρ and measurements for the marginal families), refusals before any training, and a dry
run of the family's own network where it trains one by DP-SGD."""

import math

import pytest
from torch import nn

from models import accounting, base, tvae
from models.base import FieldSpec, TableSpec
from tasks import composition
from tasks.dry_run import random_table
from tasks.errors import PrivacyError
from tasks.preflight import preflight
from tasks.train import PrivacyConfig, TrainConfig
from tasks.train_family import budget_for

SHAPE = TableSpec((
    FieldSpec("job", "categorical", values=("value 0", "value 1", "value 2")),
    FieldSpec("age", "numeric", low=0.0, high=1.0, integer=True),
    FieldSpec("balance", "numeric", low=0.0, high=1.0),
))
TINY_TVAE = {"epochs": 2, "batch_size": 50, "hidden": [8], "latent_dim": 2, "modes": 2}


def _domain(family, spend=None):
    return {"family": family, "shape": SHAPE.to_dict(), "spend": spend}


def test_a_table_family_plans_its_own_dp_sgd_and_fit_spends_just_that():
    cfg = TrainConfig(family="tvae", tvae=TINY_TVAE, privacy=PrivacyConfig(target_epsilon=3.0))
    report = preflight(400, cfg, domain=_domain("tvae"))
    # tvae's own epochs and batch (not train.epochs / train.batch_size of the causal LM).
    assert (report.family, report.steps, report.sample_rate) == ("tvae", 16, 1 / 8)
    assert report.epsilon <= 3.0 and report.epsilon == pytest.approx(3.0, rel=0.01)
    assert report.dry_run_seconds > 0 and "tvae DP-SGD σ=" in report.summary
    fit = base.create("tvae", cfg.tvae).fit(random_table(SHAPE, 400, 1, 5), SHAPE,
                                            budget_for(cfg, 400, composition.DomainSpend()),
                                            seed=0)
    assert fit.events == report.plan["events"] and fit.epsilon == report.epsilon


def test_dpctgan_plans_its_category_counts_before_dp_sgd():
    cfg = TrainConfig(family="dpctgan", dpctgan={"epochs": 1, "batch_size": 100,
                                                 "generator_dims": [8],
                                                 "discriminator_dims": [8], "noise_dim": 4})
    report = preflight(300, cfg, domain=_domain("dpctgan"))
    counts, sgd = report.plan["events"]
    assert counts == accounting.gaussian(20.0)  # DPCTGANConfig.frequency_noise
    assert (sgd["q"], sgd["steps"]) == (1 / 3, 3)
    assert sgd["sigma"] == accounting.noise_for(8.0, report.delta, [counts], 1 / 3, 3)


def test_a_marginal_family_plans_rho_and_its_measurements_with_no_dry_run():
    cfg = TrainConfig(family="mst", privacy=PrivacyConfig(target_epsilon=1.0))
    report = preflight(1000, cfg, domain=_domain("mst"))
    rho = accounting.rho_for(1.0, report.delta, [])
    assert report.plan["params"]["rho"] == rho and report.plan["events"] == [
        accounting.zcdp(rho)]
    assert report.plan["params"]["one_way_measurements"] == 3
    assert report.plan["params"]["two_way_measurements"] == 2
    assert report.accountant == "rdp" and report.epsilon == pytest.approx(1.0, rel=0.01)
    assert (report.dry_run_seconds, report.steps, report.noise_multiplier) == (0, 0, 0.0)
    assert "GPT" not in report.summary and "ρ=" in report.summary


def test_a_family_is_refused_when_the_domain_releases_already_reach_the_target():
    cfg = TrainConfig(family="mst", privacy=PrivacyConfig(target_epsilon=1.0))
    spend = {"noise_multiplier": 0.5, "releases": 10, "delta": 0.0}  # ε far above 1 alone
    with pytest.raises(PrivacyError, match=r"mst cannot stay within .*no privacy budget"):
        preflight(1000, cfg, domain=_domain("mst", spend))


def test_dp_sgd_drowned_in_noise_is_refused_before_training():
    # 40 records, batches of 4 for 50 epochs at ε = 0.5: σ far above the 4 records a step.
    cfg = TrainConfig(family="tvae", tvae={**TINY_TVAE, "batch_size": 4, "epochs": 50},
                      privacy=PrivacyConfig(target_epsilon=0.5, target_delta=1e-3))
    with pytest.raises(PrivacyError, match="each step would be noise"):
        preflight(40, cfg, domain=_domain("tvae"))


def test_the_dry_run_puts_the_family_network_through_opacus_validator(monkeypatch):
    plain = tvae._mlp
    # A batch norm mixes records in a batch: Opacus refuses it, so must preflight.
    monkeypatch.setattr(tvae, "_mlp", lambda sizes: nn.Sequential(
        plain(sizes), nn.BatchNorm1d(sizes[-1])))
    cfg = TrainConfig(family="tvae", tvae=TINY_TVAE)
    with pytest.raises(PrivacyError, match="Opacus cannot train its network privately"):
        preflight(400, cfg, domain=_domain("tvae"))


def test_random_rows_keep_to_the_shape():
    rows = random_table(SHAPE, 50, 0, 3)
    assert set(rows["job"]) <= set(SHAPE.field("job").values)
    assert rows["age"].between(0, 1).all() and rows["balance"].between(0, 1).all()
    assert not math.isnan(rows["balance"].sum())


def test_a_family_that_states_no_plan_is_checked_for_its_prior_and_named(monkeypatch):
    from models.hybrid import Hybrid

    monkeypatch.setattr(Hybrid, "plan", base.Generator.plan)  # the base class's: no plan
    cfg = TrainConfig(family="hybrid")
    report = preflight(500, cfg, domain=_domain("hybrid"))
    assert "states no plan" in report.summary and report.epsilon == 8.0
    assert report.dry_run_seconds == 0
    with pytest.raises(PrivacyError, match="hybrid cannot stay within"):
        preflight(500, cfg, domain=_domain("hybrid", {"noise_multiplier": 0.3, "releases": 10,
                                                      "delta": 0.0}))
