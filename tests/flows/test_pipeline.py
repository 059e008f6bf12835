"""Both flows end to end on a slice of the demo data, then a scan for leaked personal data."""

import os
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from flows.generation import generation_flow
from flows.registry import list_versions
from tasks.generate import GenerateConfig

pytestmark = pytest.mark.slow
MODEL = "privgen-e2e"  # demo_flow's model (tests/flows/conftest.py)


@pytest.fixture(scope="module")
def pipeline(demo_flow):
    return demo_flow


def test_training_registers_a_private_champion(pipeline):
    trained = pipeline["trained"]
    assert trained["rows"]["rows_in"] == 500
    assert trained["rows"]["rows_in"] == trained["rows"]["rows_kept"] + trained["rows"][
        "rows_quarantined"]
    assert 0 < trained["train"]["epsilon"] <= 8.0
    # The preflight plan predicted the ε that training then spent.
    assert trained["preflight"]["epsilon"] == pytest.approx(trained["train"]["epsilon"], rel=0.02)
    assert trained["preflight"]["steps"] == pytest.approx(trained["train"]["steps"], rel=0.5)
    versions = list_versions(MODEL)
    champion = [v for v in versions if "champion" in v["aliases"]]
    assert len(champion) == 1 and champion[0]["stage"] == "Production"
    from tasks.promotion import history

    entry = history(MODEL)[-1]
    assert (entry["to"], entry["actor"], entry["action"]) == ("1", "training-flow", "promote")
    assert float(champion[0]["epsilon"]) <= 8.0 and float(champion[0]["delta"]) < 1 / 450


def test_logged_epsilon_agrees_with_a_second_accountant(pipeline):
    """ε recomputed from the logged σ, sample rate and steps by Google's PLD accountant, an
    implementation independent of Opacus' PRV one, is within 5 % of the logged ε."""
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant

    run = mlflow.get_run(pipeline["trained"]["run_id"])
    p = run.data.params
    step = dp_event.PoissonSampledDpEvent(float(p["privacy.sample_rate"]),
                                          dp_event.GaussianDpEvent(
                                              float(p["privacy.noise_multiplier"])))
    accountant = pld_privacy_accountant.PLDAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(step, int(p["privacy.steps"])))
    independent = accountant.get_epsilon(float(p["privacy.target_delta"]))
    logged = run.data.metrics["privacy.epsilon_spent"]
    assert logged == pytest.approx(independent, rel=0.05)
    assert run.data.metrics["privacy.epsilon_pld"] == pytest.approx(independent, rel=1e-6)


def test_audit_report_tests_the_model_against_its_control(pipeline):
    """The DP model and its non-private control are compared record by record and canary by
    canary; the verdict reaches the report, the run's metrics and the version's tags. (One
    epoch of a tiny model memorizes little, so whether power is shown is not asserted here.)"""
    trained = pipeline["trained"]
    power = trained["audit_power"]
    assert {"canary", "mia", "has_power", "summary"} <= set(power)
    model, control = trained["eval"]["audit"], trained["control"]["audit"]
    assert power["mia"]["auc_candidate"] == pytest.approx(model["mia_attack"]["auc"])
    assert power["mia"]["auc_control"] == pytest.approx(control["mia_attack"]["auc"])
    assert power["canary"]["median_control"] == pytest.approx(
        control["canary"]["exposure_median"])
    run = pipeline["trained"]["run_id"]
    assert f"**Power:** {power['summary']}." in mlflow.artifacts.load_text(
        f"runs:/{run}/reports/audit.md")
    metrics = mlflow.get_run(run).data.metrics
    assert metrics["audit.power.mia.difference"] == pytest.approx(power["mia"]["difference"])
    assert metrics["audit.power.has_power"] == float(power["has_power"])
    version = mlflow.MlflowClient().get_model_version(MODEL, trained["model"]["version"])
    assert version.tags["audit.power"] == ("shown" if power["has_power"] else "not shown")


def test_registered_model_loads_with_pyfunc_and_samples(pipeline):
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out = model.predict(pd.DataFrame({"n": [3], "seed": [1]}))
    assert list(out.columns) == [c for c in pipeline["manifest"]["columns"]]
    assert len(out) <= 3


def test_generation_writes_records_and_manifest(pipeline):
    df = pd.read_parquet(pipeline["out"])
    manifest = pipeline["manifest"]
    assert len(df) == 25 == manifest["written"]
    assert {"product", "channel", "rating", "message"} <= set(df.columns)
    assert not {"full_name", "email", "phone", "ticket_id", "customer_id"} & set(df.columns)
    assert manifest["model"]["alias"] == "champion" and manifest["privacy"]["epsilon"]


def _secrets(planted: dict, subset_text: str) -> list[str]:
    kinds = ("full_names", "emails", "phones", "card_numbers", "ibans", "other_person_names",
             "order_numbers")
    return sorted({v for k in kinds for v in planted[k] if v in subset_text})


def _texts(root: Path):
    """Every file's searchable text: parquet by cell, everything else by bytes."""
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
            yield path, df.to_csv(index=False)
        else:
            yield path, path.read_bytes().decode("utf-8", errors="ignore")


def test_no_personal_data_or_key_leaves_the_anonymize_stage(pipeline, planted, session_dir):
    secrets = _secrets(planted, pipeline["subset"].read_text())
    assert len(secrets) > 300  # the slice really holds personal data to look for
    key = os.environ["PRIVGEN_PSEUDONYM_KEY"]
    exp = mlflow.get_experiment_by_name(pipeline["cfg"].experiment)
    artifacts = Path(exp.artifact_location.removeprefix("file://"))
    run_dir = next((pipeline["root"] / "runs").iterdir())
    places = [session_dir / "mlflow.db", artifacts, pipeline["prefect_db"],
              session_dir / "prefect",  # Prefect home: result storage, local state
              pipeline["out"].parent, run_dir / "anonymized", run_dir / "model"]
    scanned = 0
    for place in places:
        files = [(place, place.read_bytes().decode("utf-8", "ignore"))] if place.is_file() \
            else list(_texts(place))
        assert files, place
        for path, text in files:
            low = text.lower()
            leaked = [s for s in secrets if s.lower() in low]
            assert not leaked, f"{len(leaked)} personal values in {path}"
            assert key not in text, f"key in {path}"
            scanned += 1
    logs = "\n".join(pipeline["logs"]).lower()
    assert pipeline["logs"] and not [s for s in secrets if s.lower() in logs]
    assert scanned > 10


def test_rerun_after_a_lost_shard_regenerates_only_it_byte_identical(pipeline):
    out = pipeline["root"] / "resume" / "synthetic.csv"
    cfg = GenerateConfig(model=f"{MODEL}@champion", n=30, shard_size=10, out=out, seed=3)
    first = generation_flow(cfg)
    original = out.read_bytes()
    shards = out.parent / f".{out.name}.shards"
    (shards / "shard-00001.json").unlink()  # as if killed before shard 1 was committed
    (shards / "shard-00002.parquet").write_bytes(b"torn write")  # and shard 2 half-written
    second = generation_flow(cfg)
    assert out.read_bytes() == original
    assert second["file"]["sha256"] == first["file"]["sha256"]
    assert [s["sha256"] for s in second["shards"]] == [s["sha256"] for s in first["shards"]]
    assert len(pd.read_csv(out)) == 30 == second["written"]


def test_generated_record_copying_training_text_is_rejected(pipeline):
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").unwrap_python_model()
    train = pd.read_parquet(next((pipeline["root"] / "runs").iterdir()) / "model" /
                            "train.parquet")
    message = next(m for m in train["message"] if isinstance(m, str) and len(m.split()) > 12)
    assert model.copies_training_text({"message": "Hi. " + message})
    assert not model.copies_training_text({"message": "entirely new words never seen before"})


def test_registered_model_serves_records_over_rest(pipeline):
    import json
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bindir = str(Path(sys.executable).parent)  # mlflow starts uvicorn from PATH
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(
        [f"{bindir}/mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                time.sleep(1)
        body = json.dumps({"dataframe_split": {"columns": ["n", "seed"], "data": [[4, 1]]},
                           "params": {"temperature": 0.8}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        records = json.loads(urllib.request.urlopen(request, timeout=120).read())["predictions"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(records) == 4
    assert set(records[0]) == set(pipeline["manifest"]["columns"])


def test_dask_cluster_gives_the_same_file_as_the_thread_pool(pipeline):
    common = {"model": f"{MODEL}@champion", "n": 20, "shard_size": 10, "seed": 11}
    threads = generation_flow(GenerateConfig(**common, out=pipeline["root"] / "t" / "s.parquet"))
    dask = generation_flow(GenerateConfig(**common, out=pipeline["root"] / "d" / "s.parquet",
                                          task_runner="dask", workers=2))
    assert dask["file"]["sha256"] == threads["file"]["sha256"]
    assert dask["written"] == 20


def test_sigkilled_generation_resumes_to_the_uninterrupted_file(pipeline):
    import signal
    import subprocess
    import sys
    import time

    privgen = str(Path(sys.executable).parent / "privgen")
    args = ["generate", "--model", f"{MODEL}@champion", "--n", "30", "--shard-size", "10",
            "--seed", "5"]
    whole = pipeline["root"] / "whole" / "s.jsonl"
    subprocess.run([privgen, *args, "--out", str(whole)], check=True, capture_output=True,
                   timeout=300)
    killed = pipeline["root"] / "killed" / "s.jsonl"
    proc = subprocess.Popen([privgen, *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = killed.parent / f".{killed.name}.shards" / "shard-00000.json"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # privgen and the local Prefect server it started
    proc.wait()
    assert not killed.exists()  # killed before assembling: no partial output published
    subprocess.run([privgen, *args, "--out", str(killed)], check=True, capture_output=True,
                   timeout=300)
    assert killed.read_bytes() == whole.read_bytes()


def test_generate_where_conditions_every_record_and_refuses_unknown_columns(pipeline):
    import subprocess
    import sys

    privgen = str(Path(sys.executable).parent / "privgen")
    out = pipeline["root"] / "where" / "email.csv"
    done = subprocess.run([privgen, "generate", "--model", f"{MODEL}@champion", "--n", "12",
                           "--where", "channel=email", "--shard-size", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    df = pd.read_csv(out)
    assert len(df) == 12 and set(df["channel"]) == {"email"}
    assert "records/s" in done.stdout + done.stderr  # the progress bar's rate column
    bad = subprocess.run([privgen, "generate", "--model", f"{MODEL}@champion", "--n", "2",
                          "--where", "shoe_size=42", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "shoe_size" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr
