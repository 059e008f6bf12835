"""The CLI as a person meets it: one clear line and a non-zero exit on user errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "privgen"


def _run(*args, cwd, env=None):
    return subprocess.run([str(BIN), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180, env={**os.environ, **(env or {})})


def test_bad_config_value_fails_before_any_work(tmp_path):
    res = _run("run", "--set", "train.privacy.target_epsilon=-1", cwd=tmp_path)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert "train.privacy.target_epsilon" in res.stderr and "Traceback" not in res.stderr
    assert len(lines) <= 3  # one message, possibly wrapped by the terminal width
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_missing_input_names_the_file(tmp_path):
    res = _run("run", "--set", "ingest.path=nowhere.csv", cwd=tmp_path)
    assert res.returncode == 1 and "nowhere.csv" in res.stderr and "Traceback" not in res.stderr


def test_generate_from_unknown_model_says_what_to_do(tmp_path):
    res = _run("generate", "--model", "nosuchmodel@champion", "--n", "5", cwd=tmp_path)
    assert res.returncode == 1 and "nosuchmodel" in res.stderr and "privgen" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("cmd", [["--help"], ["run", "--help"], ["generate", "--help"],
                                 ["models", "--help"], ["serve", "--help"]])
def test_every_command_explains_itself(cmd, tmp_path):
    res = _run(*cmd, cwd=tmp_path)
    assert res.returncode == 0 and "Usage" in res.stdout


def test_serve_builds_scheduled_deployments():
    from flows.deployments import build

    training, generation = build(None, "0 2 * * 0", "0 4 * * *", "m@champion", 10, "x.parquet")
    assert training.schedules[0].schedule.cron == "0 2 * * 0"
    assert generation.parameters == {"model": "m@champion", "n": 10, "out": "x.parquet"}


def test_preflight_refuses_a_plan_above_the_epsilon_ceiling_in_one_line(tmp_path, demo_csv):
    subset = tmp_path / "t.csv"
    subset.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:201]))
    res = _run("run", "--preflight", "--set", f"ingest.path={subset}",
               "--set", "train.privacy.epsilon_ceiling=5", cwd=tmp_path)
    assert res.returncode == 1 and "epsilon_ceiling" in res.stderr
    assert "Traceback" not in res.stderr


def test_anonymize_one_file_keeps_other_columns_and_scrubs_text(tmp_path):
    src = tmp_path / "c.csv"
    src.write_text('id,comment,score\n1,"Call Jane Smith on +44 20 7946 0958 or '
                   'jane@example.org",3\n2,"Card 4111 1111 1111 1111 was declined",5\n')
    res = _run("anonymize", str(src), "--out", "a.jsonl", "--text-column", "comment",
               cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    import pandas as pd

    out = pd.read_json(tmp_path / "a.jsonl", lines=True)
    assert out["id"].tolist() == [1, 2] and out["score"].tolist() == [3, 5]
    text = " ".join(out["comment"])
    for secret in ("Jane", "Smith", "7946", "jane@example.org", "4111"):
        assert secret not in text
    assert (tmp_path / "a.anonymization.json").exists()
    key = (tmp_path / ".privgen" / "pseudonym.key")
    assert not key.exists() or key.read_text().strip() not in (tmp_path / "a.jsonl").read_text()
