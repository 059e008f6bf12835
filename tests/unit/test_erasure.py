"""Erasure (issue 15): the subject filter, suppression at ingest, key rotation, the CLI's refusal
of an id on the command line and promotion's erasure gate; no flow, tiny data."""

import os
import secrets
import stat

import pandas as pd
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from tasks import keys
from tasks.anonymize import KEY_ENV, Key, key_id, keyed_pseudonym
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.erasure import subject_ids, suppressor
from tasks.errors import ConfigError, PrivacyError
from tasks.gates import RegisterConfig
from tasks.ingest import ERASED, INGEST_ERROR, IngestConfig, ingest
from tasks.promotion import PromotionConfig, erasure_pending, promotion_verdicts
from tasks.subjects import Bloom
from tasks.validate import ValidateConfig, check_rate, validate_parquet


def _key() -> Key:
    secret = secrets.token_hex(32).encode()
    return Key(secret, key_id(secret))


def test_bloom_holds_its_members_and_rejects_others_at_its_rate():
    members = [f"p{i:020x}" for i in range(2000)]
    bloom = Bloom.from_dict(Bloom.of(members).to_dict())  # as read back from the run
    assert all(m in bloom for m in members)
    strangers = [f"q{i:020x}" for i in range(20_000)]
    assert sum(s in bloom for s in strangers) <= 2  # rate 1e-6: ~0.02 expected
    assert bloom.n == 2000 and bloom.m / bloom.n < 30  # about 29 bits per subject


def test_bloom_under_another_key_does_not_find_the_subject():
    old, new = _key(), _key()
    bloom = Bloom.of([keyed_pseudonym(old, "customer_id")("C-00001")])
    assert keyed_pseudonym(old, "customer_id")("C-00001") in bloom
    assert keyed_pseudonym(new, "customer_id")("C-00001") not in bloom


CSV = ("ticket_id,customer_id,product\nT-000001,C-00001,Router\nT-000002,C-00002,Phone\n"
       "T-000003,C-00001,Laptop\nT-000004,C-00003,Phone\n")


def _contract():
    return DataContract(columns=(ColumnSpec(name="ticket_id", role=Role.ID),
                                 ColumnSpec(name="customer_id", role=Role.ID),
                                 ColumnSpec(name="product")))


def test_ingest_quarantines_an_erased_subjects_rows_without_keeping_their_values(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text(CSV)
    key = _key()
    request = {"request": "r1", "column": "customer_id",
               "pseudonyms": {key.key_id: keyed_pseudonym(key, "customer_id")(" c-00001 ")}}
    erased = suppressor(ColumnSpec(name="customer_id", role=Role.ID), {key.key_id: key},
                        [request])
    result = ingest(IngestConfig(path=src), tmp_path / "raw", erased)
    assert result.rows == 4 and result.rows_erased == 2
    canonical = pd.read_parquet(result.canonical_path)
    gone = canonical[canonical[INGEST_ERROR] == ERASED]
    assert gone["_source_row"].tolist() == [1, 3]
    assert gone[["ticket_id", "customer_id", "product"]].isna().all().all()
    outcome = validate_parquet(tmp_path / "raw" / "canonical.parquet", _contract(),
                               ValidateConfig(max_quarantine_rate=1.0), str(src),
                               tmp_path / "raw")
    assert outcome.report.reasons == {ERASED: 2}
    check_rate(outcome.report, ValidateConfig(max_quarantine_rate=0.0), str(src))  # no fault
    assert outcome.report.rows_in == outcome.report.rows_kept + outcome.report.rows_quarantined
    quarantine = pd.read_parquet(outcome.quarantine_path)
    assert "C-00001" not in quarantine.to_csv()


def test_no_request_under_a_held_key_suppresses_nothing(tmp_path, caplog):
    held, gone = _key(), _key()
    request = {"request": "r1", "column": "customer_id",
               "pseudonyms": {gone.key_id: keyed_pseudonym(gone, "customer_id")("C-00001")}}
    spec = ColumnSpec(name="customer_id", role=Role.ID)
    assert suppressor(spec, {held.key_id: held}, [request]) is None
    assert "no longer held" in caplog.text
    assert suppressor(spec, {held.key_id: held}, []) is None


def test_an_integer_subject_id_is_one_id_however_it_is_written(tmp_path):
    spec = ColumnSpec(name="customer_id", dtype=DType.INTEGER, role=Role.ID)
    key = _key()
    (subject,) = subject_ids(pd.Series(["123"]), spec)
    request = {"request": "r1", "column": "customer_id",
               "pseudonyms": {key.key_id: keyed_pseudonym(key, "customer_id")(subject)}}
    erased = suppressor(spec, {key.key_id: key}, [request])
    table = pa.table({"customer_id": ["00123", "123.0", "1234", None]})
    assert erased(table).tolist() == [True, True, False, False]


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    return tmp_path / ".privgen" / "pseudonym.key"


def test_rotate_retires_the_old_key_and_records_the_new_id(key_file):
    first = next(iter(keys.held(key_file)))
    rotation = keys.rotate(key_file)
    assert rotation.old == first and rotation.new != first
    assert stat.S_IMODE(rotation.retired_file.stat().st_mode) == 0o600
    assert list(keys.held(key_file)) == [rotation.new, rotation.old]  # current first
    assert {"event": "rotated", "key_id": rotation.new, "previous": first} in [
        {k: e[k] for k in ("event", "key_id", "previous")} for e in keys.events()]
    with pytest.raises(PrivacyError, match="current key"):
        keys.destroy(key_file, rotation.new)
    keys.destroy(key_file, rotation.old)
    assert not rotation.retired_file.exists() and list(keys.held(key_file)) == [rotation.new]


def test_rotate_refuses_a_missing_key_file_and_a_key_from_the_environment(key_file,
                                                                          monkeypatch):
    with pytest.raises(PrivacyError, match="no local key"):
        keys.rotate(key_file)
    assert not key_file.exists()
    monkeypatch.setenv(KEY_ENV, secrets.token_hex(32))
    with pytest.raises(PrivacyError, match="secret store"):
        keys.rotate(key_file)


def test_erase_refuses_an_id_given_on_the_command_line_without_repeating_it():
    from flows.cli import app

    res = CliRunner().invoke(app, ["erase", "--subject", "C-66133"])
    assert isinstance(res.exception, ConfigError)
    assert "history" in str(res.exception) and "C-66133" not in str(res.exception)


def test_erase_refuses_an_id_off_the_contracts_pattern_without_repeating_it(tmp_path):
    from flows.cli import app
    from tasks.errors import InputError

    res = CliRunner().invoke(app, ["erase", "--subject"], input="Veronica Small\n")
    assert isinstance(res.exception, InputError)
    assert "customer_id" in str(res.exception) and "Veronica" not in str(res.exception)


def test_promotion_warns_on_pending_erasure_and_refuses_it_by_policy():
    tags = {"privacy.private": "True", "privacy.epsilon": "1", "eval.perplexity": "3",
            "audit.verdict": "pass", "erasure.pending": "req1"}
    cfg = RegisterConfig()
    assert "req1" in erasure_pending(tags) and erasure_pending({}) is None
    _, failed = promotion_verdicts(tags, None, cfg, PromotionConfig())
    assert "erasure" not in failed
    _, failed = promotion_verdicts(tags, None, cfg, PromotionConfig(refuse_erasure_pending=True))
    assert "req1" in failed["erasure"]


def test_key_file_permissions_stay_owner_only(key_file):
    keys.held(key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_subject_column_is_the_configured_or_the_only_id_column():
    from tasks.anonymize import AnonymizeConfig, subject_column

    two = _contract()
    assert subject_column(two, AnonymizeConfig(subject_column="customer_id")) == "customer_id"
    with pytest.raises(ConfigError, match="ticket_id, customer_id"):
        subject_column(two, AnonymizeConfig())
    with pytest.raises(ConfigError, match="not an ID column"):
        subject_column(two, AnonymizeConfig(subject_column="product"))
    one = DataContract(columns=(ColumnSpec(name="customer_id", role=Role.ID),
                                ColumnSpec(name="product")))
    assert subject_column(one, AnonymizeConfig()) == "customer_id"


def _training_run(key: Key, customers: list[str]) -> str:
    """A training run as anonymize leaves it: its key id and subject filter."""
    from tasks import subjects, tracking

    run = tracking.start_run("erasure-unit", "run", {"privgen.flow": "training"})
    tracking.set_tags(run, {"privgen.key_id": key.key_id})
    subjects.record(run, map(keyed_pseudonym(key, "customer_id"), customers), key.key_id,
                    "customer_id")
    tracking.end_run(run)
    return run


def test_after_rotation_both_keys_link_until_the_old_one_is_destroyed(key_file):
    from tasks import erasure

    spec = ColumnSpec(name="customer_id", role=Role.ID)
    subject = f"C-{secrets.randbelow(10**5):05d}"
    old_run = _training_run(next(iter(keys.held(key_file).values())), [subject])
    rotation = keys.rotate(key_file)
    new_run = _training_run(keys.held(key_file)[rotation.new], [subject, "C-99999"])
    _, affected = erasure.erase(subject, spec, keys.held(key_file))
    assert {old_run, new_run} <= set(affected.runs)
    assert erasure.outputs_by_key()[rotation.old]["runs"] == [old_run]
    keys.destroy(key_file, rotation.old)
    _, affected = erasure.erase(subject, spec, keys.held(key_file))
    assert new_run in affected.runs and old_run not in affected.runs
    assert old_run in affected.unlinkable[rotation.old]  # crypto-shredded


def test_promote_records_the_warning_and_a_policy_refuses(make_model):
    from tasks import promotion, tracking
    from tasks.errors import RegistryError

    tags = {"privacy.private": "True", "privacy.epsilon": "1", "privacy.delta": "1e-5",
            "eval.perplexity": "3", "eval.usable_rate": "1", "audit.verdict": "pass",
            "erasure.pending": "req9"}
    client = tracking.client()
    name = make_model(client, tags, tags)
    with pytest.raises(RegistryError, match=r"gate erasure failed.*req9"):
        promotion.promote(name, "1", RegisterConfig(),
                          PromotionConfig(refuse_erasure_pending=True), client=client)
    entry = promotion.promote(name, "1", RegisterConfig(), PromotionConfig(), client=client)
    assert "req9" in entry["warnings"][0]
    assert promotion.history(name, client=client)[0]["warnings"] == entry["warnings"]


def test_the_single_file_commands_apply_the_suppression_list(tmp_path):
    """`privgen validate INPUT` quarantines an erased subject's rows with reason `erased`, and
    `privgen anonymize INPUT --out` drops them, as `privgen run` ingest does."""
    import json

    import yaml

    from flows.cli import app
    from tasks import erasure

    subject = f"C-{secrets.randbelow(10**5):05d}"
    columns = [{"name": "customer_id", "role": "id"}, {"name": "rating", "dtype": "integer"}]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"contract": {"columns": columns},
                                      "anonymize": {"subject_column": "customer_id"}}))
    src = tmp_path / "t.csv"
    pd.DataFrame({"customer_id": [subject, "C-1", subject.lower(), "C-2"],
                  "rating": [1, 2, 3, 4]}).to_csv(src, index=False)
    erasure.erase(subject, ColumnSpec(name="customer_id", role=Role.ID), keys.held(None))

    result = CliRunner().invoke(app, ["validate", str(src), "-c", str(config), "-o",
                                      str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    quarantine = pd.read_parquet(tmp_path / "v" / "quarantine.parquet")
    assert len(quarantine) == 2 and subject not in quarantine.to_csv()
    assert json.loads((tmp_path / "v" / "validation_report.json").read_text())["reasons"] == {
        ERASED: 2}
    out = tmp_path / "a.csv"
    result = CliRunner().invoke(app, ["anonymize", str(src), "--out", str(out), "-c",
                                      str(config)])
    assert result.exit_code == 0, result.output
    assert "2 dropped as erased" in result.output
    assert len(pd.read_csv(out)) == 2
    assert json.loads(out.with_suffix(".anonymization.json").read_text())["rows_erased"] == 2
