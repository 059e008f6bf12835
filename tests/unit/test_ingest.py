import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from tasks import sources_csv
from tasks.errors import InputError
from tasks.ingest import (
    INGEST_ERROR,
    SOURCE_LINE,
    SOURCE_ROW,
    IngestConfig,
    SqlSource,
    ingest,
    read_source,
    reparse,
)


def _frame():
    return pd.DataFrame({"id": ["a", "b", "c"], "n": ["1", "", "3"], "t": ["x, y", "z", "NA"]})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reads_each_format_as_strings_with_row_numbers(tmp_path, suffix):
    path = tmp_path / f"in{suffix}"
    df = _frame()
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    got = read_source(path, IngestConfig(path=path))
    assert list(got[SOURCE_ROW]) == [1, 2, 3]
    assert got["t"].iloc[0] == "x, y"
    assert got["n"].isna().iloc[1] and got["t"].isna().iloc[2]  # "" and "NA" are missing


def test_ingest_writes_canonical_copy_and_digest(tmp_path):
    src = tmp_path / "in.csv"
    _frame().to_csv(src, index=False)
    result = ingest(IngestConfig(path=src), tmp_path / "out")
    assert result.rows == 3 and result.columns == ["id", "n", "t"]
    assert len(result.source_digest) == 64
    assert len(pd.read_parquet(result.canonical_path)) == 3


@pytest.mark.parametrize("make, match", [
    (lambda p: p, "file not found"),
    (lambda p: (p.mkdir(), p)[1], "is a directory"),
    (lambda p: (p.write_text(""), p)[1], "is empty"),
    (lambda p: (p.write_text("a,b\n"), p)[1], "no data rows"),
])
def test_unreadable_inputs_name_the_file(tmp_path, make, match):
    path = make(tmp_path / "bad.csv")
    with pytest.raises(InputError, match=match) as err:
        read_source(path, IngestConfig(path=path))
    assert "bad.csv" in str(err.value)


def test_unknown_extension_says_what_to_do(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(InputError, match=r"ingest\.format"):
        read_source(path, IngestConfig(path=path))


def test_undecodable_line_is_marked_not_fatal(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name\nAnn\nJos\xe9\n".encode("latin-1"))
    got = read_source(path, IngestConfig(path=path))
    assert got[INGEST_ERROR].tolist()[1] == "bad_encoding" and pd.isna(got[INGEST_ERROR].iloc[0])
    assert got["name"].iloc[1] == "Jos\\xe9"  # the byte shown, not silently replaced
    assert read_source(path, IngestConfig(path=path, encoding="auto"))["name"].iloc[1] == "José"


ODD_CSV = (
    '\ufeffid,text,n\r\n'
    '1,"quoted, with comma",3\r\n'
    '2,"two\r\nlines",4\r\n'
    '3,"say ""hi""",5\r\n'
    '4,plain,\r\n'
)


def test_fast_and_exact_csv_readers_read_the_same_records(tmp_path):
    """The Arrow reader and the csv-module reader must agree, or results depend on file oddities
    elsewhere in the file (which decide which reader runs)."""
    path = tmp_path / "odd.csv"
    path.write_bytes(ODD_CSV.encode())
    cfg = IngestConfig(path=path)
    dialect, _ = sources_csv.csv_dialect(path, cfg, "csv")
    names = ["id", "text", "n"]
    fast = pa.concat_tables(sources_csv._fast_csv(path, cfg, dialect, names, 1))
    exact = pa.concat_tables(sources_csv._exact_csv(path, cfg, dialect, names, 1))
    assert fast.equals(exact)
    assert fast[SOURCE_LINE].to_pylist() == [2, 3, 5, 6]
    assert fast["text"].to_pylist()[1:3] == ["two\r\nlines", 'say "hi"']


def test_a_late_oddity_hands_over_without_losing_or_repeating_rows(tmp_path):
    path = tmp_path / "late.csv"
    lines = [f"{i},row {i}" for i in range(1, 60_001)]
    lines[59_000] = "59001,row,extra"  # ragged, far past the first Arrow batch
    path.write_text("id,text\n" + "\n".join(lines) + "\n")
    got = read_source(path, IngestConfig(path=path, chunk_rows=7_000))
    assert got[SOURCE_ROW].tolist() == list(range(1, 60_001))
    assert got[SOURCE_LINE].tolist() == list(range(2, 60_002))
    assert got[INGEST_ERROR].notna().sum() == 1 and got["id"].iloc[-1] == "60000"


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiter_is_detected(tmp_path, delimiter):
    path = tmp_path / "data.csv"
    rows = [["id", "text", "n"], ["1", '"a, b; c | d"', "2"], ["2", "plain", "3"]]
    path.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    got = read_source(path, IngestConfig(path=path))
    assert list(got.columns[1:4]) == ["id", "text", "n"] and got["text"].iloc[0] == "a, b; c | d"


def test_space_after_delimiter_is_detected(tmp_path):
    path = tmp_path / "adult.csv"
    path.write_text("age, workclass, hours\n39, State-gov, 40\n50, ?, 13\n")
    got = read_source(path, IngestConfig(path=path, missing_values=("?",)))
    assert got["workclass"].tolist()[0] == "State-gov" and pd.isna(got["workclass"].iloc[1])


def test_jsonl_key_seen_only_late_is_a_column(tmp_path):
    path = tmp_path / "late.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2, "b": {"x": [1]}}\n{"a": true}\n')
    got = read_source(path, IngestConfig(path=path))
    assert got["b"].tolist()[1] == '{"x": [1]}' and got["a"].tolist() == ["1", "2", "true"]
    assert got[SOURCE_LINE].tolist() == [1, 3, 4]


def test_sql_source_needs_table_or_query_and_hides_the_password():
    with pytest.raises(ValidationError, match="exactly one of table and query"):
        SqlSource(url="sqlite://", table="t", query="SELECT 1")
    cfg = IngestConfig(sql=SqlSource(url="postgresql://u:hunter2@db/x", table="t"))
    assert "hunter2" not in json.dumps(cfg.model_dump(mode="json"))


def test_replay_parses_unsplit_lines_again_under_new_settings(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("id,text\n1,plain\n2,'a, b'\n")
    ingest(IngestConfig(path=path), tmp_path / "out")
    canonical = pq.read_table(tmp_path / "out" / "canonical.parquet")
    quarantined = canonical.filter(pc.is_valid(canonical[INGEST_ERROR])).append_column(
        "_reason", canonical.filter(pc.is_valid(canonical[INGEST_ERROR]))[INGEST_ERROR])
    assert quarantined["_reason"].to_pylist() == ["ragged_row"]
    detected = json.loads(canonical.schema.metadata[b"privgen"])
    again = reparse(quarantined, ["id", "text"], detected, IngestConfig(quotechar="'"))
    assert again["text"].to_pylist() == ["a, b"] and again[INGEST_ERROR].null_count == 1


def test_headerless_tsv_gets_numbered_columns(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("a\t1\nb\t2\n")
    got = read_source(path, IngestConfig(path=path, header=False))
    assert list(got.columns[1:3]) == ["column_1", "column_2"] and got["column_1"].tolist() == [
        "a", "b"]


def test_parquet_types_become_text_that_validate_reads_back(tmp_path):
    path = tmp_path / "typed.parquet"
    pq.write_table(pa.table({
        "when": pa.array([pd.Timestamp("2025-01-01 06:53:23"), None], pa.timestamp("us")),
        "n": [1, None], "tags": [["a", "b"], []], "ok": [True, False]}), path)
    got = read_source(path, IngestConfig(path=path))
    assert got["n"].tolist()[0] == "1" and got["ok"].tolist() == ["true", "false"]
    assert got["tags"].tolist() == ['["a", "b"]', "[]"]
    assert pd.to_datetime(got["when"], format="ISO8601").iloc[0] == pd.Timestamp(
        "2025-01-01 06:53:23")
