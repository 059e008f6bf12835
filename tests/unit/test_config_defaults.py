"""Defaults that belong to the demo live in the demo's config only (issue 12): a config that brings
its own contract starts from the stages' generic defaults, and an unedited --infer proposal for
another table runs through config loading, validation, anonymization and preflight."""

import numpy as np
import pandas as pd
import pytest

from flows.config import load_config
from tasks import domain
from tasks.anonymize import AnonymizeConfig, Key, anonymize, operators_for
from tasks.contract import Domain
from tasks.evaluate import EvaluateConfig
from tasks.infer import infer
from tasks.ingest import IngestConfig, read_source
from tasks.preflight import preflight
from tasks.train import load_tokenizer, split_holdout
from tasks.validate import validate


def test_no_config_still_runs_the_demo_as_before():
    cfg = load_config()
    assert cfg.anonymize.operators == {"created_at": "generalize"}
    assert cfg.anonymize.generalize["created_at"] == "month"
    assert cfg.anonymize.patterns == {"ORDER_ID": r"\bORD-\d{5,}\b"}
    assert cfg.evaluate.utility_label == "product"
    assert "created_at" in cfg.contract.names
    # The demo's hybrid is sized for `make run` (issue 13); other tables keep the family's own.
    assert cfg.train.hybrid["text"]["epochs"] < 5 and cfg.train.hybrid["table"]["rounds"] < 24
    # Hand-written demo lists and bounds are the data owner's public declarations.
    assert {c.domain for c in cfg.contract.columns} == {Domain.PUBLIC}


def test_a_file_without_a_contract_still_tunes_the_demo(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("anonymize:\n  k: 3\n")
    cfg = load_config(path)
    assert cfg.anonymize.k == 3 and cfg.anonymize.operators == {"created_at": "generalize"}
    assert cfg.evaluate.utility_label == "product"


def test_a_file_with_its_own_contract_starts_from_generic_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("contract:\n  columns:\n    - {name: age, dtype: integer, role: numeric}\n"
                    "anonymize:\n  generalize: {age: 'bin:5'}\n")
    cfg = load_config(path, ["train.epochs=2"])
    assert cfg.anonymize.model_dump() == AnonymizeConfig(generalize={"age": "bin:5"}).model_dump()
    assert cfg.evaluate == EvaluateConfig() and cfg.evaluate.utility_label is None
    assert operators_for(cfg.contract, cfg.anonymize)["age"] == "keep"
    assert cfg.train.epochs == 2 and cfg.train.hybrid == {}


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    """A table like the issue's census data: no created_at, no product, an integer age."""
    rng = np.random.default_rng(3)
    n = 600
    df = pd.DataFrame({
        "age": rng.integers(18, 90, n),
        "workclass": rng.choice(["Private", "Self-emp", "Local-gov", "State-gov"], n),
        "marital_status": rng.choice(["Married", "Never-married", "Divorced"], n),
        "hours_per_week": rng.integers(10, 70, n),
        "income": rng.choice(["<=50K", ">50K"], n, p=[0.75, 0.25]),
    })
    path = tmp_path_factory.mktemp("census") / "adult.csv"
    df.to_csv(path, index=False)
    return path


def test_an_unedited_infer_proposal_runs_through_loading_and_preflight(census, tmp_path):
    proposal = tmp_path / "c.yaml"
    proposal.write_text(infer(census, IngestConfig()).to_yaml())
    cfg = load_config(proposal, ["train.epochs=1", "train.model.n_embd=32",
                                 "train.model.n_layer=1", "train.model.n_head=2"])
    # Nothing of the demo's: its operators, rules, entities and label would name columns
    # this table does not have.
    assert cfg.anonymize.operators == {} and cfg.anonymize.patterns == {}
    assert cfg.anonymize.generalize == {"age": "bin:10"}  # the quasi-identifier found
    assert cfg.evaluate.utility_label == "income"
    assert cfg.ingest.path == census
    specs = {c.name: c for c in cfg.contract.columns}
    assert specs["workclass"].domain is Domain.OBSERVED and specs["age"].domain is Domain.OBSERVED
    assert specs["age"].min == 18 and specs["age"].max == 89

    kept, quarantined, report = validate(read_source(census, cfg.ingest), cfg.contract)
    assert report.rows_kept == 600 and quarantined.empty
    out, suppressed, _ = anonymize(kept, cfg.contract, cfg.anonymize, Key(b"k" * 32, "test"))
    assert len(out) + len(suppressed) == 600
    train_df, _ = split_holdout(out, cfg.train.holdout_fraction, cfg.seed)
    planned = domain.plan(cfg.contract, operators_for(cfg.contract, cfg.anonymize),
                          list(train_df.columns), cfg.train, len(train_df))
    # The observed lists and the age bounds the bands are listed between are paid for.
    assert set(planned["needed"]) == {"age", "workclass", "marital_status", "hours_per_week",
                                      "income"}
    plan = preflight(len(train_df), cfg.train, load_tokenizer(cfg.train.model), cfg.seed,
                     planned)
    assert plan.domain_releases == planned["spend"]["releases"] > 0
    assert plan.epsilon <= cfg.train.privacy.target_epsilon


def test_the_proposal_names_its_input_by_an_absolute_path(census, tmp_path, monkeypatch):
    """Proposed from the input's folder, read from anywhere: the next command finds the file."""
    from pathlib import Path

    import yaml

    monkeypatch.chdir(census.parent)
    proposal = tmp_path / "c.yaml"
    proposal.write_text(infer(Path(census.name), IngestConfig()).to_yaml())
    monkeypatch.chdir(tmp_path)
    assert yaml.safe_load(proposal.read_text())["ingest"]["path"] == str(census.resolve())
    assert load_config(proposal).ingest.path.is_file()
