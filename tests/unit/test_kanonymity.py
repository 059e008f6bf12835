from collections import Counter

import pandas as pd
import pytest

from tasks.anonymize import REASON, AnonymizeConfig, Key, anonymize, coarser_rules, l_diversity
from tasks.contract import ColumnSpec, DataContract, DType, Role

KEY = Key(b"k" * 32, "test-key")
CONTRACT = DataContract(columns=(
    ColumnSpec(name="patient_id", role=Role.ID),
    ColumnSpec(name="birth_date", dtype=DType.DATE, role=Role.QUASI_IDENTIFIER),
    ColumnSpec(name="postcode", role=Role.QUASI_IDENTIFIER, regex=r"^\d{5}$"),
    ColumnSpec(name="diagnosis", role=Role.SENSITIVE),
))
CFG = AnonymizeConfig(generalize={"birth_date": "decade", "postcode": "prefix:3"}, k=5)


def _frame() -> pd.DataFrame:
    """Two large classes, five 1990s rows in four rare postcode areas, one lone outlier."""
    rows = []
    for i in range(12):
        rows.append(("1985-01-01", "94110", "flu" if i % 2 else "asthma"))
        rows.append(("1972-06-30", "10001", ["flu", "gout", "asthma"][i % 3]))
    rows += [("1991-03-03", "94199", "flu"), ("1993-03-03", "94105", "gout"),
             ("1990-03-03", "94017", "flu"), ("1999-03-03", "94555", "asthma"),
             ("1996-03-03", "94321", "flu"), ("1945-02-02", "99950", "gout")]
    df = pd.DataFrame(rows, columns=["birth_date", "postcode", "diagnosis"])
    df.insert(0, "patient_id", [f"P{i:04d}" for i in range(len(df))])
    return df


def _counter_k(out: pd.DataFrame) -> int:
    return min(Counter(zip(out["birth_date"], out["postcode"], strict=True)).values())


def test_k_holds_on_the_output_by_an_independent_count():
    df = _frame()
    out, suppressed, report = anonymize(df, CONTRACT, CFG, KEY)
    assert _counter_k(out) >= 5 and report.smallest_class == _counter_k(out)
    assert report.smallest_class_before == 1
    # Nothing is lost: every input row is written or quarantined with a reason.
    assert len(out) + len(suppressed) == len(df) == report.rows + report.rows_suppressed
    assert sorted(out.index.append(suppressed.index)) == list(df.index)
    assert suppressed[REASON].str.contains("k=5").all()


def test_rare_rows_are_generalized_further_before_any_is_suppressed():
    out, suppressed, report = anonymize(_frame(), CONTRACT, CFG, KEY)
    # The five 1990s rows stay, under a shorter postcode prefix and their exact decade.
    assert report.rows_generalized == 5
    assert out.loc[24:28, ["birth_date", "postcode"]].drop_duplicates().values.tolist() == [
        ["1990s", "94***"]]
    assert (out.loc[:23, "postcode"].isin(["941**", "100**"])).all()  # big classes untouched
    # The lone 1940s row cannot reach k: it is suppressed, in anonymized form.
    assert list(suppressed.index) == [29] and report.rows_suppressed == 1
    assert suppressed.at[29, "patient_id"].startswith("p")
    assert suppressed.at[29, "postcode"] != "99950"
    assert suppressed.at[29, "birth_date"] != "1945-02-02"


def test_without_further_generalization_small_classes_are_suppressed():
    cfg = CFG.model_copy(update={"k_generalize": False})
    df = _frame()
    out, suppressed, report = anonymize(df, CONTRACT, cfg, KEY)
    assert len(out) + len(suppressed) == len(df)
    generalized = Counter(zip(df["birth_date"].str[:3], df["postcode"].str[:3], strict=True))
    small = sum(n for n in generalized.values() if n < 5)
    assert report.rows_suppressed == small == 6 and _counter_k(out) >= 5


def test_a_homogeneous_class_is_flagged():
    df = _frame()
    df.loc[df["postcode"] == "94110", "diagnosis"] = "HIV"
    out, _, report = anonymize(df, CONTRACT, CFG, KEY)
    flagged = l_diversity(out, ["birth_date", "postcode"], "diagnosis", 2)
    assert flagged[["birth_date", "postcode"]].values.tolist() == [["1980s", "941**"]]
    assert flagged.at[0, "rows"] == 12 and flagged.at[0, "distinct"] == 1
    assert report.l_diversity["diagnosis"]["classes_below_l"] == 1
    assert report.l_diversity["diagnosis"]["rows_in_classes_below_l"] == 12
    assert "HIV" not in str(report.to_dict())  # counts only, never the disclosed value


def test_k_of_one_changes_nothing():
    out, suppressed, report = anonymize(_frame(), CONTRACT, CFG.model_copy(update={"k": 1}), KEY)
    assert suppressed.empty and report.rows_generalized == 0 and len(out) == 30


def test_k_larger_than_the_data_suppresses_everything_and_says_so():
    out, suppressed, report = anonymize(_frame(), CONTRACT, CFG.model_copy(update={"k": 100}),
                                        KEY)
    assert out.empty and len(suppressed) == 30 and report.smallest_class is None


@pytest.mark.parametrize(("rule", "steps"), [
    ("month", ["year", "decade", None]), ("decade", [None]),
    ("prefix:3", ["prefix:2", "prefix:1", None]), ("bin:10", ["bin:20", "bin:40", None]),
])
def test_generalization_ladders_end_in_withholding(rule, steps):
    assert coarser_rules(rule) == steps
