"""Inputs that broke a run (issue 12): Excel's sep= line, quotes that are data, bytes that are
not text, extensions that say nothing, a deleted MLflow experiment, and crashes that must not
print data values.

Each case goes through what a user runs (`privgen validate X --infer c.yaml`, then
`--config c.yaml`) or the stage functions behind it, and checks rows in = kept + quarantined.
"""

import gzip
import logging
import random
import re
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from flows import cli
from flows.config import load_config
from tasks import sources_csv, tracking
from tasks.errors import ConfigError, InputError
from tasks.infer import infer
from tasks.ingest import INGEST_ERROR, SOURCE_LINE, IngestConfig, ingest, read_source
from tasks.validate import ValidateConfig, validate_file

SENTENCES = Path(__file__).resolve().parents[3] / "shared" / "data" / (
    "uci_sentiment_labelled_sentences")


def _validate_with_proposal(path: Path, tmp_path: Path, **ingest_kw):
    """What `privgen validate X --infer c.yaml` then `privgen validate X --config c.yaml` do."""
    proposal = tmp_path / "c.yaml"
    proposal.write_text(infer(path, IngestConfig(**ingest_kw)).to_yaml())
    cfg = load_config(proposal)
    outcome = validate_file(path, cfg.contract, cfg.ingest.model_copy(update={"path": path}),
                            ValidateConfig(), tmp_path / "out")
    kept = pd.read_parquet(outcome.kept_path)
    quarantined = pd.read_parquet(outcome.quarantine_path)
    assert outcome.report.rows_in == len(kept) + len(quarantined)
    return yaml.safe_load(proposal.read_text()), outcome.report, kept, quarantined


# --- Excel's sep= directive ----------------------------------------------------------------

def test_excel_sep_line_sets_the_delimiter_and_the_header_follows_it(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("sep=;\nname;age;city\nAnna;34;Paris\nBob;45;Rome\nCara;29;Oslo\n")
    proposal, report, kept, quarantined = _validate_with_proposal(path, tmp_path)
    assert proposal["ingest"]["delimiter"] == ";"
    assert [c["name"] for c in proposal["contract"]["columns"]] == ["name", "age", "city"]
    assert report.rows_in == 3 and len(quarantined) == 0
    assert list(kept["age"]) == [34, 45, 29]
    lines = read_source(path, IngestConfig(delimiter=";"))[SOURCE_LINE]
    assert list(lines) == [3, 4, 5]  # the sep= line and the header are lines 1-2


def test_excel_sep_line_in_quotes_with_a_bom_and_crlf(tmp_path):
    path = tmp_path / "export.csv"
    path.write_bytes(b'\xef\xbb\xbf"sep=,"\r\nid,note\r\n1,"a, b"\r\n2,c\r\n')
    df = read_source(path, IngestConfig())
    assert list(df["id"]) == ["1", "2"] and list(df["note"]) == ["a, b", "c"]


# --- quotes that are data ------------------------------------------------------------------

def _messages(n=5574, odd=17, openers=(7, 9, 12)):
    """A tab-separated message export: label<TAB>text, no header; ``odd`` messages hold an
    odd number of quotes, three of them opening the text with one, late in the file (past
    the first 64 KiB, where the delimiter is sniffed)."""
    rnd = random.Random(3)
    words = ("ok", "lar", "joking", "wif", "u", "oni", "free", "entry", "in", "a", "wkly",
             "comp", "to", "win", "fa", "cup", "final")
    lines = [f"{'spam' if i % 7 == 0 else 'ham'}\t"
             f"{' '.join(rnd.choice(words) for _ in range(rnd.randint(3, 14)))}"
             for i in range(n)]
    for k, i in enumerate(range(300, n, 310)[:odd]):
        label, text = lines[i].split("\t")
        lines[i] = f'{label}\t"{text}' if k in openers else f'{label}\t{text} 6" screen'
    return lines


def test_message_export_with_unbalanced_quotes_counts_every_line(tmp_path):
    path = tmp_path / "SMSSpamCollection"
    lines = _messages()
    path.write_text("\n".join(lines) + "\n")
    assert sum(line.count('"') % 2 for line in lines) == 17
    proposal, report, kept, quarantined = _validate_with_proposal(path, tmp_path)
    assert proposal["ingest"]["quoting"] == "none"
    assert proposal["ingest"]["header"] is False
    assert proposal["ingest"]["format"] == "csv"  # no extension: told from the content
    assert report.rows_in == 5574 and len(kept) == 5574 and len(quarantined) == 0
    assert kept["column_2"].iloc[2470] == lines[2470].split("\t")[1]  # the quote kept as data


def test_quoted_reading_quarantines_lines_it_cannot_tell_apart(tmp_path):
    path = tmp_path / "messages.tsv"
    lines = _messages()
    path.write_text("label\ttext\n" + "\n".join(lines) + "\n")
    cfg = IngestConfig(path=path, quoting="fields")
    result = ingest(cfg, tmp_path / "fields")
    assert result.rows == 5574  # every line a record: nothing swallowed silently
    table = pq.read_table(result.canonical_path)
    errors = table[INGEST_ERROR].to_pylist()
    swallowed = [line for line, e in zip(table[SOURCE_LINE].to_pylist(), errors, strict=True)
                 if e == "unbalanced_quote"]
    assert swallowed[0] == 2472  # the first message that opens with a quote (line 2472)
    assert result.rows_unreadable == len(swallowed)
    # Detected (the default), the quotes are data and every line reads.
    assert ingest(IngestConfig(path=path), tmp_path / "auto").rows_unreadable == 0


def test_fast_and_exact_readers_agree_on_swallowed_lines(tmp_path):
    path = tmp_path / "messages.tsv"
    path.write_text("label\ttext\n" + "\n".join(_messages(n=900, odd=3, openers=(1,))) + "\n")
    cfg = IngestConfig(path=path, quoting="fields")
    dialect, _ = sources_csv.csv_dialect(path, cfg, "tsv")
    names = ["label", "text"]
    fast = pa.concat_tables(sources_csv._csv_chunks(path, cfg, dialect, names, 1))
    exact = pa.concat_tables(sources_csv._exact_csv(path, cfg, dialect, names, 1))
    assert fast.num_rows == exact.num_rows == 900
    assert fast.equals(exact)


def test_swallowed_lines_replay_only_with_quotes_as_data(tmp_path):
    from tasks.validate import replay

    path = tmp_path / "messages.tsv"
    path.write_text("label\ttext\n" + "\n".join(_messages(n=900, odd=3, openers=(1,))) + "\n")
    contract = infer(path, IngestConfig(quoting="none")).contract
    first = validate_file(path, contract, IngestConfig(quoting="fields"),
                          ValidateConfig(max_quarantine_rate=1.0), tmp_path / "first")
    swallowed = first.report.rows_quarantined
    assert swallowed > 0 and first.report.rows_in == 900
    again = replay(first.quarantine_path, contract, IngestConfig(quoting="fields"),
                   ValidateConfig(), tmp_path / "again")
    assert again.report.rows_kept == 0  # quoted, the lone quote would be dropped silently
    fixed = replay(first.quarantine_path, contract, IngestConfig(quoting="none"),
                   ValidateConfig(), tmp_path / "fixed")
    assert fixed.report.rows_kept == swallowed
    kept = pd.read_parquet(fixed.kept_path)
    assert kept["text"].str.startswith('"').sum() == 1


@pytest.mark.parametrize("name", ["amazon_cells_labelled.txt", "imdb_labelled.txt",
                                  "yelp_labelled.txt"])
def test_review_sentences_count_exactly_the_files_lines(tmp_path, name):
    path = SENTENCES / name
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    lines = path.read_bytes().count(b"\n")  # wc -l
    proposal, report, kept, quarantined = _validate_with_proposal(path, tmp_path)
    assert proposal["ingest"]["header"] is False
    assert report.rows_in == lines == 1000
    assert len(quarantined) == 0
    assert set(kept["column_2"]) == {0, 1}


def test_a_first_line_of_data_is_not_taken_for_a_header(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text('A "great" film, truly.\t1\nBoring.\t0\n"Meh" at best\t0\nLoved it.\t1\n')
    proposal, report, kept, _ = _validate_with_proposal(path, tmp_path)
    assert proposal["ingest"]["header"] is False and report.rows_in == 4
    assert list(kept["column_1"]) == ['A "great" film, truly.', "Boring.", '"Meh" at best',
                                      "Loved it."]


# --- bytes that are not text ---------------------------------------------------------------

def test_random_bytes_named_csv_are_refused_in_one_line_naming_no_byte(tmp_path, capfd):
    path = tmp_path / "data.csv"
    noise = random.Random(1).randbytes(4000)
    path.write_bytes(noise)
    with pytest.raises(InputError) as caught:
        read_source(path, IngestConfig())
    message = str(caught.value)
    assert re.fullmatch(r".*data\.csv: is not text but binary data \(\d+% of the first 4000 "
                        r"bytes are control bytes\); export the data as CSV.*", message)
    assert message.isprintable() and message.isascii() and "\n" not in message
    assert "Exception ignored" not in capfd.readouterr().err


@pytest.mark.parametrize(("magic", "kind"), [
    (b"PK\x03\x04", "a ZIP archive"), (b"SQLite format 3\x00", "an SQLite database"),
    (b"\x1f\x8b\x08\x00" + bytes(12), "cannot be decompressed")])
def test_binary_formats_are_named(tmp_path, magic, kind):
    path = tmp_path / "export.csv"
    path.write_bytes(magic + random.Random(2).randbytes(200))
    with pytest.raises(InputError, match=re.escape(kind)):
        read_source(path, IngestConfig())


def test_a_ragged_line_with_bad_bytes_prints_nothing(tmp_path, capfd):
    path = tmp_path / "people.csv"
    path.write_bytes(b"id,name\n1,Ann\n2,\xff\xfeBo,extra\n3,Cy\n")
    df = read_source(path, IngestConfig())
    assert list(df[INGEST_ERROR].fillna("")) == ["", "bad_encoding", ""]
    assert capfd.readouterr().err == ""


# --- extensions that say nothing -----------------------------------------------------------

def test_uci_data_file_inferred_then_validated_with_the_printed_command(tmp_path):
    path = tmp_path / "adult.data"
    path.write_text("".join(f"{20 + i % 50}, Private, {'Bachelors' if i % 3 else 'HS-grad'}, "
                            f"{'<=50K' if i % 4 else '>50K'}\n" for i in range(60)))
    runner = CliRunner()
    proposal = tmp_path / "c.yaml"
    done = runner.invoke(cli.app, ["validate", str(path), "--infer", str(proposal)])
    assert done.exit_code == 0, done.output
    assert yaml.safe_load(proposal.read_text())["ingest"]["format"] == "csv"
    command = re.search(r"`privgen (validate .*?)`", " ".join(done.output.split())).group(1)
    checked = runner.invoke(cli.app, [*command.split(), "--out", str(tmp_path / "out")])
    assert checked.exit_code == 0, checked.output
    assert "checked 60 rows: 60 kept, 0 quarantined" in " ".join(checked.output.split())


@pytest.mark.parametrize("name", ["records.dat", "records", "records.data.gz"])
def test_format_is_told_from_the_content(tmp_path, name):
    frame = pd.DataFrame({"id": ["1", "2"], "city": ["Oslo", "Rome"]})
    jsonl = frame.to_json(orient="records", lines=True).encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(jsonl) if name.endswith(".gz") else jsonl)
    assert list(read_source(path, IngestConfig())["city"]) == ["Oslo", "Rome"]
    parquet = tmp_path / f"p-{name.split('.')[0]}.bin"
    frame.to_parquet(parquet)
    assert list(read_source(parquet, IngestConfig())["city"]) == ["Oslo", "Rome"]


# --- a deleted MLflow experiment -----------------------------------------------------------

def test_a_deleted_experiment_is_one_line_saying_how_to_restore_it():
    client = tracking.client()
    exp_id = client.create_experiment("privgen-deleted-in-the-ui")
    client.delete_experiment(exp_id)
    with pytest.raises(ConfigError) as caught:
        tracking.start_run("privgen-deleted-in-the-ui", "r", {})
    message = str(caught.value)
    assert f"MLflow experiment 'privgen-deleted-in-the-ui' (id {exp_id}) is deleted" in message
    assert (f"MLFLOW_TRACKING_URI={mlflow.get_tracking_uri()} mlflow experiments restore "
            f"--experiment-id {exp_id}") in message
    assert "--set experiment=NAME" in message
    with pytest.raises(ConfigError, match="privgen generate --experiment NAME"):
        tracking.start_run("privgen-deleted-in-the-ui", "g", {},
                           setting="privgen generate --experiment NAME")


# --- crashes print no data values ----------------------------------------------------------

PLANTED = "Wilhelmina Fotheringay-Pratt 555-201-7788"


def test_an_unexpected_error_is_one_line_without_its_message(tmp_path, monkeypatch, capsys):
    import tasks.validate

    def fault(*args, **kwargs):  # an injected fault whose message quotes a data value
        raise ValueError(f"cannot convert {PLANTED!r} to int")

    monkeypatch.setattr(tasks.validate, "validate_file", fault)
    path = tmp_path / "people.csv"
    path.write_text("id,name\n1,Ann\n")
    monkeypatch.setattr(sys, "argv", ["privgen", "validate", str(path)])
    with pytest.raises(SystemExit) as exit_:
        cli.run_app(debug=False)
    err = capsys.readouterr()
    shown = " ".join((err.out + err.err).split())
    assert exit_.value.code == 1
    assert PLANTED not in shown and "Wilhelmina" not in shown and "Traceback" not in shown
    assert re.search(r"error: unexpected ValueError in tests/unit/test_bad_inputs_more\.py:\d+",
                     shown)
    assert len((err.out + err.err).strip().splitlines()) <= 3  # one line, wrapped by rich


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    import tasks.validate

    def fault(*args, **kwargs):
        raise ValueError("planted")

    monkeypatch.setattr(tasks.validate, "validate_file", fault)
    path = tmp_path / "people.csv"
    path.write_text("id,name\n1,Ann\n")
    monkeypatch.setattr(sys, "argv", ["privgen", "validate", str(path)])
    with pytest.raises(ValueError, match="planted"):
        cli.run_app(debug=True)


def test_prefect_run_logs_get_the_error_type_and_place_not_its_message():
    from flows.shutdown import WithheldValues

    def record(exc):
        try:
            raise exc
        except Exception:
            return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                                     "Task run failed with exception: %r", (exc,),
                                     sys.exc_info())

    crashed = record(ValueError(f"cannot convert {PLANTED!r} to int"))
    assert WithheldValues().filter(crashed)
    text = logging.Formatter().format(crashed)
    assert PLANTED not in text and "Traceback" not in text
    assert re.match(r"ValueError in tests/unit/test_bad_inputs_more\.py:\d+ \(message and "
                    r"traceback withheld", text)
    state = logging.LogRecord("prefect.flow_runs", logging.INFO, __file__, 1,
                              f"Finished in state Failed('ValueError: {PLANTED}')", (), None)
    WithheldValues().filter(state)
    assert state.getMessage() == "Finished in state Failed (message withheld)"
    user = record(InputError("people.csv: line 3 is blank"))
    WithheldValues().filter(user)
    assert "people.csv: line 3 is blank" in logging.Formatter().format(user)


# --- the run summary -----------------------------------------------------------------------

def test_run_summary_reports_quarantined_and_suppressed_rows_apart():
    run_id = tracking.start_run("privgen-summary-test", "r", {})
    tracking.log_metrics(run_id, {"anonymize.rows": 90, "anonymize.rows_suppressed": 7})
    result = {"run_id": run_id, "rows": {"rows_in": 100, "rows_kept": 97,
                                         "rows_quarantined": 3}}
    assert cli._rows_line(result) == ("100 rows in: 90 kept, 3 quarantined (validation), "
                                      "7 suppressed (k-anonymity)")


def test_run_summary_counts_erased_rows_apart_from_faulty_ones():
    run_id = tracking.start_run("privgen-summary-test", "r", {})
    tracking.log_metrics(run_id, {"anonymize.rows": 90, "anonymize.rows_suppressed": 0})
    result = {"run_id": run_id, "rows": {"rows_in": 100, "rows_kept": 90,
                                         "rows_quarantined": 10, "rows_erased": 4}}
    assert cli._rows_line(result) == ("100 rows in: 90 kept, 6 quarantined (validation), "
                                      "4 erased on request, 0 suppressed (k-anonymity)")
