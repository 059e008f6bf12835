"""The table spec from the released contract, the auto family choice and the family budget."""

import math

import pytest

from models import accounting
from tasks import composition, release, spec
from tasks.contract import ColumnSpec, DataContract, Domain, DType, Role
from tasks.errors import ConfigError, PrivacyError
from tasks.train import TrainConfig
from tasks.train_config import resolve_family
from tasks.train_family import budget_for


def _contract(*columns):
    return DataContract(columns=tuple(columns))


TEXT = ColumnSpec(name="message", role=Role.TEXT)
CITY = ColumnSpec(name="city", role=Role.CATEGORY, allowed=("Oslo", "Rome"))
AGE = ColumnSpec(name="age", dtype=DType.INTEGER, role=Role.NUMERIC, min=17.5, max=90)
ID = ColumnSpec(name="id", role=Role.ID)
FREE = ColumnSpec(name="note_code", role=Role.CATEGORY)


def test_the_spec_follows_the_released_types_and_leaves_identifiers_out():
    s = spec.table_spec(_contract(ID, TEXT, CITY, AGE), ["id", "message", "city", "age"])
    assert [(f.name, f.kind) for f in s.fields] == [("city", "categorical"), ("age", "numeric"),
                                                    ("message", "text")]
    assert s.field("city").values == ("Oslo", "Rome")
    assert (s.field("age").low, s.field("age").high, s.field("age").integer) == (18, 90, True)


def test_a_generalized_quasi_identifier_becomes_its_released_values():
    from flows.config import demo_anonymize, demo_contract

    released = release.released_contract(demo_contract(), demo_anonymize())
    s = spec.table_spec(released, released.names)
    postcode = s.field("postcode").values
    assert len(postcode) == 1000 + 100 + 10 + 1 and "921**" in postcode and "*" in postcode
    assert s.field("created_at").values[:2] == ("2025-01", "2025-02")
    assert "full_name" not in s.names and s.names[-1] == "message"


def test_a_structured_column_with_no_finite_domain_is_refused_naming_it():
    with pytest.raises(ConfigError, match=r"note_code: no finite released domain.*allowed "
                                          r"values.*domain: observed"):
        spec.table_spec(_contract(CITY, FREE), ["city", "note_code"])


@pytest.mark.parametrize("regex, expected", [
    (r"^\d{2}$", 100), (r"^[A-C]x$", 3), (r"^(?:(?:\d\*)|(?:\*\*))$", 11),
    (r"^\d{5}$", None), (r"^[a-z]+$", None)])
def test_regex_forms_are_enumerated_only_when_finite_and_small(regex, expected):
    values = spec.enumerate_form(regex)
    assert (None if values is None else len(values)) == expected


def test_auto_picks_by_the_released_columns():
    assert spec.choose_family(_contract(TEXT), ["message"])[0] == "causal_lm"
    family, reason = spec.choose_family(_contract(CITY, FREE, TEXT), ["city", "note_code",
                                                                       "message"])
    assert family == "causal_lm" and "note_code" in reason
    if spec.available("aim"):
        assert spec.choose_family(_contract(CITY, AGE), ["city", "age"])[0] == "aim"
    family, reason = spec.choose_family(_contract(CITY, TEXT), ["city", "message"])
    assert family == ("hybrid" if spec.available("hybrid") else "causal_lm")
    assert "1 structured and 1 text" in reason


def test_the_family_budget_composes_the_domain_releases_and_leaves_their_delta():
    cfg = TrainConfig.model_validate({"privacy": {"target_epsilon": 3.0, "target_delta": 1e-5}})
    spend = composition.DomainSpend(noise_multiplier=20.0, releases=3, delta=2e-6)
    b = budget_for(cfg, 1000, spend)
    assert b.enabled and b.epsilon == 3.0 and b.delta == pytest.approx(8e-6)
    assert b.prior == (accounting.gaussian(20.0, 1.0, 3),)
    plain = budget_for(cfg.model_copy(update={"privacy": cfg.privacy.model_copy(
        update={"enabled": False})}), 1000, spend)
    assert not plain.enabled and plain.prior == ()
    with pytest.raises(PrivacyError, match="does not cover"):
        budget_for(cfg, 1000, composition.DomainSpend(20.0, 3, 1e-5))
    assert math.isfinite(accounting.epsilon(list(b.prior), b.delta))


def test_a_family_section_is_validated_by_the_family_config_and_an_unknown_family_refused():
    with pytest.raises(ValueError, match="family"):
        TrainConfig.model_validate({"family": "dbscan"})
    installed = [f for f in ("tvae", "aim", "dplstm") if spec.available(f)]
    if installed:
        with pytest.raises(ValueError, match=installed[0]):
            TrainConfig.model_validate({installed[0]: {"no_such_setting": 1}})


def test_domain_is_read_not_assumed():
    # An estimated domain stays an allowed list: the spec takes it as released.
    col = CITY.model_copy(update={"domain": Domain.ESTIMATED})
    assert spec.table_spec(_contract(col), ["city"]).field("city").values == ("Oslo", "Rome")


def _auto(contract, columns, label, **sections):
    cfg = TrainConfig.model_validate(sections)
    return resolve_family(cfg, contract, columns, label)


@pytest.mark.skipif(not spec.available("aim"), reason="models/marginal.py not installed")
def test_auto_gives_aim_the_evaluation_label_as_its_target():
    from models import base

    family, reason, cfg = _auto(_contract(CITY, AGE), ["city", "age"], "city")
    assert family == "aim" and cfg.aim == {"target": "city"}
    assert "aim.target city" in reason
    assert base.create(family, cfg.section(family)).config.target == "city"
    # No label, or a label that is not a structured column: aim's default workload.
    assert _auto(_contract(CITY, AGE), ["city", "age"], None)[2].aim == {}
    assert _auto(_contract(CITY, AGE), ["city", "age"], "message")[2].aim == {}


@pytest.mark.skipif(not spec.available("aim"), reason="models/marginal.py not installed")
def test_a_target_or_family_the_user_set_wins_over_the_label():
    family, reason, cfg = _auto(_contract(CITY, AGE), ["city", "age"], "city",
                                aim={"target": "age", "rounds": 4})
    assert cfg.aim == {"target": "age", "rounds": 4} and "target" not in reason
    # null is a setting too: no target, even with a label.
    assert _auto(_contract(CITY, AGE), ["city", "age"], "city",
                 aim={"target": None})[2].aim == {"target": None}
    family, reason, cfg = _auto(_contract(CITY, AGE), ["city", "age"], "city", family="aim")
    assert (family, reason, cfg.aim) == ("aim", "set in train.family", {})


@pytest.mark.skipif(not spec.available("hybrid"), reason="models/hybrid.py not installed")
def test_auto_gives_hybrids_aim_table_part_the_label():
    from models import base

    family, reason, cfg = _auto(_contract(CITY, TEXT), ["city", "message"], "city",
                                hybrid={"table": {"rounds": 4}})
    assert family == "hybrid" and cfg.hybrid["table"] == {"rounds": 4, "target": "city"}
    assert "hybrid.table.target city" in reason
    gen = base.create(family, cfg.section(family))
    gen._parts()
    assert gen.table.config.target == "city"
    assert _auto(_contract(CITY, TEXT), ["city", "message"], "city",
                 hybrid={"table": {"target": None}})[2].hybrid == {"table": {"target": None}}
    assert _auto(_contract(CITY, TEXT), ["city", "message"], "city",
                 hybrid={"table_family": "mst"})[2].hybrid == {"table_family": "mst"}
