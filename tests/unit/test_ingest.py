import pandas as pd
import pytest

from tasks.errors import InputError
from tasks.ingest import SOURCE_ROW, IngestConfig, ingest, read_source


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
    (lambda p: (p.write_text(""), p)[1], "cannot read"),
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


def test_wrong_encoding_is_reported(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name\nJos\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"ingest\.encoding"):
        read_source(path, IngestConfig(path=path))
