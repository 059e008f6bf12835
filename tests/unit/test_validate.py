import json

import pandas as pd
import pytest

from flows.config import demo_contract
from tasks.errors import ValidationFailed
from tasks.ingest import SOURCE_ROW
from tasks.validate import REASON, ValidateConfig, check_rate, validate


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
    with pytest.raises(ValidationFailed, match="columns missing from the input: email"):
        validate(demo_frame.drop(columns=["email"]), demo_contract(), "tickets.csv")


def test_quarantine_rate_over_threshold_fails(demo_frame):
    broken = demo_frame.copy()
    broken.loc[:999, "rating"] = "99"
    _, _, report = validate(broken, demo_contract())
    with pytest.raises(ValidationFailed, match=r"max_quarantine_rate"):
        check_rate(report, ValidateConfig(), "tickets.csv")


def test_report_holds_no_raw_values(demo_frame, planted):
    _, _, report = validate(demo_frame, demo_contract())
    text = json.dumps(report.to_dict()).lower()
    for kind in ("emails", "full_names", "phones"):
        assert not any(v.lower() in text for v in planted[kind])
    for bad in planted["bad_rows"]:
        if "value" in bad and len(str(bad["value"])) > 3:
            assert str(bad["value"]).lower() not in text
