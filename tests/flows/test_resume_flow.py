"""`privgen run --resume`: a training run SIGKILLed at a random moment of training, resumed in the
same MLflow run, ends as the uninterrupted run does, with no metric step logged twice."""

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from flows.config import load_config
from flows.training import training_flow
from tasks import tracking

pytestmark = pytest.mark.slow
EXPERIMENT = "privgen-resume-test"


def _settings(workdir: Path, subset: Path) -> list[str]:
    return [f"workdir={workdir}", f"ingest.path={subset}", f"experiment={EXPERIMENT}",
            "train.family=causal_lm",  # these flows test the causal LM's own path
            "register.model_name=privgen-resume", "train.epochs=4", "train.batch_size=32",
            "train.model.n_embd=32", "train.model.n_layer=1", "register.max_perplexity=1000",
            "evaluate.samples=2"]


def test_sigkilled_training_resumes_to_the_uninterrupted_result(prefect_api, tmp_path, demo_csv):
    subset = tmp_path / "tickets.csv"
    subset.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:401]))
    whole = training_flow(load_config(overrides=_settings(tmp_path / "whole", subset)))
    runs = tmp_path / "runs"
    settings = _settings(runs, subset)

    privgen = str(Path(sys.executable).parent / "privgen")
    cmd = [privgen, "run", *(a for s in settings for a in ("--set", s))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=os.environ.copy(), start_new_session=True)
    deadline = time.monotonic() + 600
    while (not list(runs.glob("*/model/checkpoint.pt")) and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.05)
    delay = random.Random().uniform(0.0, 1.0)  # somewhere in the following epochs
    time.sleep(delay)
    assert proc.poll() is None, f"training finished before the kill ({delay:.2f} s)"
    os.killpg(proc.pid, signal.SIGKILL)  # privgen and the local Prefect server it started
    proc.wait()

    client = tracking.client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    killed = [r for r in client.search_runs([experiment.experiment_id])
              if r.info.status == "RUNNING"]
    assert len(killed) == 1
    run_id = killed[0].info.run_id
    resumed = subprocess.run([privgen, "run", "--resume", run_id], capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    spent = client.get_metric_history(run_id, "privacy.epsilon_spent")
    when = f"killed {delay:.2f} s after the first checkpoint"
    assert [m.value for m in spent] == [pytest.approx(whole["train"]["epsilon"], abs=1e-9)], when
    assert run.data.params["privacy.steps"] == str(whole["train"]["steps"])
    # Model, optimizer, accountant and every RNG were restored: the same weights came out.
    assert run.data.metrics["eval.perplexity"] == pytest.approx(whole["eval"]["perplexity"],
                                                                rel=1e-6)
    for key in ("train.loss", "privacy.epsilon", "validate.rows_in", "eval.perplexity"):
        steps = Counter(m.step for m in client.get_metric_history(run_id, key))
        assert all(n == 1 for n in steps.values()), (key, steps, when)
    assert sorted(m.step for m in client.get_metric_history(run_id, "train.loss")) == [1, 2, 3, 4]


def test_resume_refuses_a_finished_run_and_extra_settings(prefect_api, tmp_path):
    privgen = str(Path(sys.executable).parent / "privgen")
    client = tracking.client()
    run_id = tracking.start_run(EXPERIMENT, "finished", {"privgen.flow": "training"})
    tracking.end_run(run_id)
    done = subprocess.run([privgen, "run", "--resume", run_id], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "the run finished" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    both = subprocess.run([privgen, "run", "--resume", run_id, "--set", "seed=1"],
                          capture_output=True, text=True, timeout=120)
    assert both.returncode == 1 and "drop --config and --set" in both.stderr + both.stdout
    assert client.get_run(run_id).info.status == "FINISHED"
