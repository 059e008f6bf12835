from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.config import demo_contract, load_config
from tasks.contract import ColumnSpec, DataContract, DType, Role
from tasks.errors import ValidationFailed
from tasks.infer import contract_to_yaml, infer
from tasks.ingest import SOURCE_ROW, IngestConfig
from tasks.validate import (
    REASON,
    ValidateConfig,
    check_rate,
    replay,
    report_html,
    validate,
    validate_file,
)


def test_demo_bad_rows_are_exactly_the_quarantined_ones(demo_frame, planted):
    kept, quarantined, report = validate(demo_frame, demo_contract())
    expected = {b["row"] + 1 for b in planted["bad_rows"]}  # _source_row is 1-based
    assert set(quarantined[SOURCE_ROW]) == expected
    assert report.rows_in == len(demo_frame) == len(kept) + len(quarantined)
    assert quarantined[REASON].str.len().gt(0).all()


def test_duplicate_id_keeps_the_first_occurrence(demo_frame, planted):
    _, quarantined, _ = validate(demo_frame, demo_contract())
    dupes = [b for b in planted["bad_rows"] if b["kind"] == "duplicate_ticket_id"]
    for b in dupes:
        row = quarantined[quarantined[SOURCE_ROW] == b["row"] + 1]
        assert "be_unique:ticket_id" in row[REASON].iloc[0]
        assert b["duplicate_of"] + 1 not in set(quarantined[SOURCE_ROW])


def test_typed_output(demo_frame):
    kept, _, _ = validate(demo_frame, demo_contract())
    assert str(kept["rating"].dtype) == "Int64" and kept["rating"].between(1, 5).all()
    assert pd.api.types.is_datetime64_any_dtype(kept["created_at"])


def test_missing_column_is_a_batch_failure_naming_it(demo_frame):
    with pytest.raises(ValidationFailed, match=r"tickets\.csv: schema drift: .*; missing: email;"):
        validate(demo_frame.drop(columns=["email"]), demo_contract(), "tickets.csv")


def test_quarantine_rate_over_threshold_fails(demo_frame):
    broken = demo_frame.copy()
    broken.loc[:999, "rating"] = "99"
    _, _, report = validate(broken, demo_contract())
    with pytest.raises(ValidationFailed, match=r"max_quarantine_rate"):
        check_rate(report, ValidateConfig(), "tickets.csv")


def _identifiers(planted):
    values = [v for kind in ("emails", "full_names", "phones") for v in planted[kind]]
    values += [str(b["value"]) for b in planted["bad_rows"] if len(str(b.get("value", ""))) > 3]
    return [v.lower() for v in values]


def test_reports_hold_no_raw_values(demo_csv, planted, tmp_path):
    outcome = validate_file(demo_csv, demo_contract(), IngestConfig(), ValidateConfig(), tmp_path)
    text = (Path(outcome.report_path).read_text() + report_html(outcome.report)).lower()
    assert outcome.report.rows_quarantined > 0 and "be_unique:ticket_id" in text
    leaked = [v for v in _identifiers(planted) if v in text]
    assert not leaked


def test_chunked_run_matches_the_whole_frame(demo_frame, demo_csv, tmp_path):
    _, quarantined, report = validate(demo_frame, demo_contract())
    outcome = validate_file(demo_csv, demo_contract(), IngestConfig(chunk_rows=400),
                            ValidateConfig(chunk_rows=700), tmp_path)
    chunked = pd.read_parquet(outcome.quarantine_path)
    assert chunked[SOURCE_ROW].tolist() == quarantined[SOURCE_ROW].tolist()
    assert chunked[REASON].tolist() == quarantined[REASON].tolist()
    assert outcome.report.reasons == report.reasons


def test_replay_recovers_rows_after_a_contract_fix_but_never_a_duplicate(demo_csv, tmp_path):
    first = validate_file(demo_csv, demo_contract(), IngestConfig(), ValidateConfig(), tmp_path)
    fixed = demo_contract().model_copy(update={"columns": tuple(
        c.model_copy(update={"min": None, "max": None}) if c.name == "rating" else c
        for c in demo_contract().columns)})
    again = replay(Path(first.quarantine_path), fixed, IngestConfig(), ValidateConfig(),
                   tmp_path / "replay")
    recovered = pd.read_parquet(again.kept_path)
    still = pd.read_parquet(again.quarantine_path)
    assert len(recovered) + len(still) == first.report.rows_quarantined
    assert recovered[SOURCE_ROW].tolist() == sorted(
        pd.read_parquet(first.quarantine_path).query("_reason == 'be_between:rating'")[SOURCE_ROW])
    assert (still[REASON] == "be_unique:ticket_id").sum() == first.report.reasons[
        "be_unique:ticket_id"]


def test_replay_after_raising_the_field_cap(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("id,note\n" + "".join(f"{i},{'x' * (50 if i == 3 else 5)}\n"
                                           for i in range(1, 41)))
    contract = DataContract(columns=(ColumnSpec(name="id"), ColumnSpec(name="note")))
    first = validate_file(path, contract, IngestConfig(max_field_bytes=20), ValidateConfig(),
                          tmp_path / "out")
    assert first.report.reasons == {"field_too_long:note": 1}
    again = replay(Path(first.quarantine_path), contract, IngestConfig(), ValidateConfig(),
                   tmp_path / "out")
    assert pd.read_parquet(again.kept_path)[SOURCE_ROW].tolist() == [3]
    assert Path(first.quarantine_path).exists()  # the replay writes beside it, not over it


def test_inferred_contract_validates_a_file_someone_else_wrote(tmp_path):
    """Acceptance (issue 3): ';'-separated, '?' for missing, columns privgen never saw."""
    rows = ["patient_ref;Nachname;email;dob;visit_date;weight_kg;smoker;ward;notes"]
    for i in range(1, 121):
        rows.append(";".join([
            f"PR-{i:04d}", f"Müller{i}", f"p{i}@klinik.example" if i % 9 else "?",
            f"{1940 + i % 60}-0{1 + i % 9}-1{i % 10}", f"1{i % 10}.0{1 + i % 9}.2024",
            "?" if i % 13 == 0 else f"{50 + i % 40}.{i % 10}", "ja" if i % 3 else "nein",
            f"W{i % 4}", f'"Kontrolle; Befund {i} unauffällig, Rückruf in {i % 7} Tagen"']))
    path = tmp_path / "export.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    inferred = infer(path, IngestConfig())
    yaml_file = tmp_path / "contract.yaml"
    yaml_file.write_text(inferred.to_yaml())
    cfg = load_config(yaml_file)
    roles = {c.name: c.role for c in cfg.contract.columns}
    dtypes = {c.name: c.dtype for c in cfg.contract.columns}
    assert cfg.ingest.delimiter == ";" and "?" in cfg.ingest.missing_values
    assert roles["email"] is Role.DIRECT_IDENTIFIER and roles["patient_ref"] is Role.ID
    assert roles["dob"] is Role.QUASI_IDENTIFIER and roles["notes"] is Role.TEXT
    assert dtypes["weight_kg"] is DType.FLOAT and dtypes["visit_date"] is DType.DATE
    outcome = validate_file(path, cfg.contract, cfg.ingest, cfg.validate_, tmp_path / "out")
    assert outcome.report.rows_in == 120 and outcome.report.rows_quarantined == 0


def test_contract_yaml_round_trips():
    text = contract_to_yaml(demo_contract(), {"email": "an address"})
    assert "# an address" in text
    assert DataContract.model_validate(yaml.safe_load(text)["contract"]) == demo_contract()


@pytest.mark.parametrize("name", ["wine_data.csv", "breast_cancer.csv", "iris.csv"])
def test_inferred_contract_validates_public_csvs_privgen_never_saw(tmp_path, name):
    """scikit-learn's bundled CSVs: a first line of metadata ("178,13,class_0,...") over 14
    unnamed columns in wine and breast cancer; --infer must cope with files it did not make."""
    import sklearn.datasets

    path = Path(sklearn.datasets.__file__).parent / "data" / name
    yaml_file = tmp_path / "contract.yaml"
    yaml_file.write_text(infer(path, IngestConfig()).to_yaml())
    cfg = load_config(yaml_file)
    outcome = validate_file(path, cfg.contract, cfg.ingest, cfg.validate_, tmp_path / "out")
    report = outcome.report
    assert report.rows_kept >= report.rows_in - 1  # at most the metadata line is quarantined
    assert report.rows_in == report.rows_kept + report.rows_quarantined


def test_dates_outside_the_contracts_bounds_are_quarantined_on_the_utc_date():
    contract = DataContract(columns=(
        ColumnSpec(name="id", dtype=DType.INTEGER, role=Role.ID),
        ColumnSpec(name="born", dtype=DType.DATE, role=Role.QUASI_IDENTIFIER,
                   earliest="1900-01-01", latest="2010-12-31"),
        ColumnSpec(name="at", dtype=DType.DATETIME, role=Role.DATETIME,
                   earliest="2025-01-01", latest="2025-12-31"),
    ))
    df = pd.DataFrame({
        "id": ["1", "2", "3", "4"],
        "born": ["1980-05-01", "2011-01-01", "1970-01-01", "2010-12-31"],
        "at": ["2025-03-01T10:00:00+00:00", "2025-03-01T10:00:00+00:00",
               "2025-12-31T23:30:00-01:00",  # 2026-01-01 on the UTC clock
               "2025-01-01T00:30:00+01:00"],  # 2024-12-31 UTC
    })
    df.insert(0, SOURCE_ROW, range(1, 5))
    kept, quarantined, report = validate(df, contract)
    assert kept["id"].tolist() == [1]
    assert quarantined[REASON].tolist() == ["be_between:born", "be_between:at",
                                               "be_between:at"]
    assert report.reasons == {"be_between:at": 2, "be_between:born": 1}


def test_date_bounds_need_a_date_column_and_an_order():
    with pytest.raises(ValueError, match="need dtype date or datetime"):
        ColumnSpec(name="n", dtype=DType.INTEGER, earliest="2020-01-01")
    with pytest.raises(ValueError, match="is after latest"):
        ColumnSpec(name="d", dtype=DType.DATE, earliest="2021-01-01", latest="2020-01-01")
