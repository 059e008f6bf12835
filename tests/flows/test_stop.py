"""Stopping and crashing the CLI (issue 12): SIGTERM on `privgen run` and SIGTERM/SIGINT on
`privgen generate` end within seconds with one line and 128 + the signal, keep finished
shards, and leave no process behind (the ephemeral Prefect server included); an unexpected
error inside a flow prints one line and none of the data values in its message."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
MODEL = "privgen-stop-test"
PRIVGEN = str(Path(sys.executable).parent / "privgen")
PLANTED = "Wilhelmina Fotheringay-Pratt 555-201-7788"


def _settings(workdir: Path, data: Path) -> list[str]:
    return [f"workdir={workdir}", f"ingest.path={data}", "experiment=privgen-stop-test",
            "train.family=causal_lm",  # these flows test the causal LM's own path
            f"register.model_name={MODEL}", "train.epochs=1", "train.batch_size=32",
            "train.model.n_embd=32", "train.model.n_layer=1", "register.max_perplexity=1000",
            "evaluate.samples=2", "audit.enabled=false"]


@pytest.fixture(scope="module")
def tiny(prefect_api, tmp_path_factory, demo_csv):
    root = tmp_path_factory.mktemp("stop")
    data = root / "tickets.csv"
    data.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:301]))
    return root, data


@pytest.fixture(scope="module")
def model(demo_flow):
    """A registered demo model to generate from: the session's shared one."""
    return f"{demo_flow['name']}/{demo_flow['trained']['model']['version']}"


def _wait_for(root: Path, pattern: str, proc: subprocess.Popen, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while (not list(root.glob(pattern)) and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.1)
    assert proc.poll() is None, "the command ended before it could be stopped"


def _stop(proc: subprocess.Popen, signum: int) -> tuple[int, str]:
    """Send ``signum`` to the privgen process alone (as `kill PID` does), then return its exit
    status and stderr; fails if privgen or anything it started is still alive afterwards."""
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    time.sleep(1)
    with pytest.raises(ProcessLookupError):  # its session held the Prefect server, workers
        os.killpg(proc.pid, 0)
    return proc.returncode, err


def _one_line(err: str, startswith: str) -> None:
    assert "Traceback" not in err and "Aborted" not in err
    joined = " ".join(err.split())
    assert startswith in joined
    assert joined.index(startswith) > len(joined) - 200  # the last thing printed


def test_sigterm_stops_a_training_run_and_its_prefect_server(tiny):
    root, data = tiny
    cmd = [PRIVGEN, "run", *(a for s in _settings(root / "killed", data) for a in ("--set", s))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _wait_for(root, "killed/*/stages/validate.json", proc)
    code, err = _stop(proc, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    _one_line(err, "stopped by SIGTERM: finished shards and checkpoints are kept")
    assert list((root / "killed").glob("*/stages/validate.json"))  # finished stages kept


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_generate_stops_keeping_finished_shards(tiny, model, signum):
    root, _ = tiny
    out = root / f"gen-{signum}" / "s.jsonl"
    proc = subprocess.Popen([PRIVGEN, "generate", "--model", model, "--n", "3000",
                             "--shard-size", "50", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    first = out.parent / f".{out.name}.shards" / "shard-00000.json"
    _wait_for(first.parent, first.name, proc)
    code, err = _stop(proc, signum)
    assert code == 128 + signum
    _one_line(err, f"stopped by {signal.Signals(signum).name}")
    assert first.is_file() and not out.exists()  # shard kept, no partial output published


def test_a_crash_inside_a_flow_prints_one_line_and_no_value(tiny, tmp_path):
    root, data = tiny
    script = tmp_path / "inject.py"
    script.write_text(
        "import sys\n"
        "from flows import cli, cli_console\n"
        "cli.apply_defaults()\n"
        "cli_console.quiet_prefect_console(False)\n"
        "import tasks.anonymize\n"
        "def fault(*args, **kwargs):  # an injected fault quoting a data value\n"
        f'    raise ValueError("cannot convert {PLANTED!r} to int")\n'
        "tasks.anonymize.anonymize = fault\n"
        "cli.main()\n")
    settings = _settings(root / "crashed", data)
    done = subprocess.run([sys.executable, str(script), "run",
                           *(a for s in settings for a in ("--set", s))],
                          capture_output=True, text=True, timeout=600,
                          cwd=Path(__file__).resolve().parents[2])
    shown = done.stdout + done.stderr
    assert done.returncode == 1
    assert "Wilhelmina" not in shown and "555-201" not in shown and "Traceback" not in shown
    _one_line(done.stderr, "error: unexpected ValueError in")
