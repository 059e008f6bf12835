"""Every installed generator family end to end (issue 13): `privgen run` → registry → `privgen
generate`, and the registered pyfunc's predict gives the same records for the same n and seed;
every family served by `mlflow models serve` (causal_lm's demo model in test_pipeline.py)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.generation import generation_flow
from flows.training import training_flow
from tasks import spec
from tasks.generate import GenerateConfig

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
_JOBS = ("admin.", "blue-collar", "entrepreneur", "housemaid", "management", "retired",
         "self-employed", "services", "student", "technician", "unemployed", "unknown")


def _bank_contract() -> list[dict]:
    """Public domains only: the bank's own code lists and bounds, declared by the owner."""
    return [
        {"name": "age", "dtype": "integer", "role": "numeric", "min": 18, "max": 95},
        {"name": "job", "role": "category", "allowed": list(_JOBS)},
        {"name": "marital", "role": "category", "allowed": ["divorced", "married", "single"]},
        {"name": "education", "role": "category",
         "allowed": ["primary", "secondary", "tertiary", "unknown"]},
        {"name": "balance", "dtype": "integer", "role": "numeric", "min": -10000,
         "max": 100000},
        {"name": "housing", "role": "category", "allowed": ["no", "yes"]},
        {"name": "y", "role": "category", "allowed": ["no", "yes"]},
    ]


# (family, rows, config overrides): the cheapest settings that still run each family's whole
# path (one epoch or round, short mirror descent, narrow layers); what is asserted is the
# plumbing, not the fit.
TEXT = "{epochs: 1, vocab_k: 500, embed: 16, hidden: 32}"
# causal_lm is not trained here: the session's demo run (demo_flow) is that family's run.
CASES = {
    "tvae": ("bank", ["train.tvae.epochs=1", "train.tvae.batch_size=100",
                      "train.tvae.hidden=[32]", "train.tvae.latent_dim=8"]),
    "aim": ("bank", ["train.aim.rounds=1", "train.aim.round_iters=50",
                     "train.aim.final_iters=50"]),
    "mst": ("bank", ["train.mst.final_iters=50"]),
    "dpctgan": ("bank", ["train.dpctgan.epochs=1", "train.dpctgan.generator_dims=[32]",
                         "train.dpctgan.discriminator_dims=[32]"]),
    "dplstm": ("demo", [f"train.dplstm={TEXT}"]),
    "hybrid": ("demo", ["train.hybrid.table={rounds: 1, round_iters: 50, final_iters: 50}",
                        f"train.hybrid.text={TEXT}"]),
}


def _bank_like(n: int) -> pd.DataFrame:
    """A seeded table shaped like the bank-marketing one (no file needed in CI): the answer
    ``y`` depends on balance and housing, so a table model has a dependency to learn."""
    rng = np.random.default_rng(7)
    balance = np.clip(rng.lognormal(7, 1.2, n).astype(int) - 500, -10000, 100000)
    housing = rng.choice(["no", "yes"], n)
    p_yes = 0.1 + 0.5 * (balance > 2000) * (housing == "no")
    return pd.DataFrame({
        "age": rng.integers(18, 96, n), "job": rng.choice(_JOBS, n),
        "marital": rng.choice(["divorced", "married", "single"], n, p=[0.1, 0.6, 0.3]),
        "education": rng.choice(["primary", "secondary", "tertiary", "unknown"], n),
        "balance": balance, "housing": housing,
        "y": np.where(rng.random(n) < p_yes, "yes", "no")})


def _data(root: Path, data: str, demo_csv: Path) -> tuple[Path, Path | None]:
    """(the input file, the config file bringing its contract; None: the demo's)."""
    if data == "demo":
        subset = root / "tickets.csv"
        subset.write_text("".join(demo_csv.read_text().splitlines(keepends=True)[:301]))
        return subset, None
    frame = _bank_like(300)
    subset = root / "bank.csv"
    frame.to_csv(subset, index=False)
    config = root / "bank.yaml"
    config.write_text(yaml.safe_dump({"contract": {"columns": _bank_contract()},
                                      "evaluate": {"utility_label": "y"}}))
    return subset, config


def _run(root: Path, family: str, demo_csv: Path) -> dict:
    from flows.config import load_config

    data, overrides = CASES[family]
    subset, config = _data(root, data, demo_csv)
    cfg = load_config(config, [f"workdir={root / 'runs'}", f"ingest.path={subset}",
                             f"register.model_name=fam-{family}", f"train.family={family}",
                             "audit.control=false", "evaluate.samples=2",
                             "evaluate.synthetic_records=50", *overrides])
    return training_flow(cfg)


@pytest.fixture(scope="module")
def trained_family(prefect_api, tmp_path_factory, demo_csv, demo_flow):
    """Each family's flow run, trained once for the module: the serving test reuses one."""
    runs = {"causal_lm": {"family": "causal_lm", "root": tmp_path_factory.mktemp("causal_lm"),
                          "trained": demo_flow["trained"], "name": demo_flow["name"],
                          "version": demo_flow["trained"]["model"]["version"]}}

    def run(family: str) -> dict:
        if family not in runs:
            root = tmp_path_factory.mktemp(family)
            trained = _run(root, family, demo_csv)
            runs[family] = {"family": family, "root": root, "trained": trained,
                            "name": f"fam-{family}", "version": trained["model"]["version"]}
        return runs[family]

    return run


@pytest.fixture(scope="module",
                params=[f for f in ("causal_lm", *CASES) if spec.available(f)])
def family_run(request, trained_family):
    return trained_family(request.param)


def test_the_flow_trains_registers_and_tags_the_family(family_run):
    family, trained = family_run["family"], family_run["trained"]
    assert trained["train"]["family"] == family
    assert trained["train"]["family_reason"] == "set in train.family"
    assert 0 < trained["train"]["epsilon"] <= 8.0 and trained["train"]["private"]
    assert trained["train"]["events"], "the family reports its privacy events"
    mv = mlflow.MlflowClient().get_model_version(family_run["name"], family_run["version"])
    assert mv.tags["train.family"] == family and mv.tags["train.mechanism"]
    assert ("eval.perplexity" in mv.tags) == (trained["eval"].get("perplexity") is not None)


def test_generate_and_the_pyfunc_give_the_same_records(family_run):
    ref = f"{family_run['name']}/{family_run['version']}"
    out = family_run["root"] / "out" / "synthetic.parquet"
    cfg = GenerateConfig(model=ref, n=12, seed=5, shard_size=5, out=out)
    manifest = generation_flow(cfg)
    written = pd.read_parquet(out)
    assert manifest["written"] == len(written) == 12
    model = mlflow.pyfunc.load_model(f"models:/{ref}")
    params = {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p,
              "batch_size": cfg.batch_size, "shard_size": cfg.shard_size}
    served = model.predict(pd.DataFrame({"n": [12], "seed": [5]}), params=params)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), written, check_dtype=False)
    assert list(written.columns) == model.unwrap_python_model().generator.spec.names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_family_is_served_by_mlflow_models_serve(family_run):
    if family_run["family"] == "causal_lm":
        pytest.skip("the demo model is served in tests/flows/test_pipeline.py")
    run = family_run
    root, uri = run["root"], f"models:/{run['name']}/{run['version']}"
    port = _free_port()
    # The model's own code_paths, not this checkout; the venv's uvicorn on the PATH.
    env = {**os.environ, "PYTHONPATH": "",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", uri, "-p",
         str(port), "--env-manager", "local", "--host", "127.0.0.1"],
        env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        body = json.dumps({"dataframe_split": {"columns": ["n", "seed"], "data": [[4, 3]]}})
        deadline, reply = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                             body.encode(), {"Content-Type": "application/json"})
                reply = json.loads(urllib.request.urlopen(req, timeout=60).read())
                break
            except OSError:
                time.sleep(1)
        assert reply is not None, proc.stdout.read().decode(errors="replace")[-3000:]
        rows = pd.DataFrame(reply["predictions"])
        expected = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({"n": [4], "seed": [3]}))
        assert len(rows) == 4 and list(rows.columns) == list(expected.columns)
        assert rows.astype(str).values.tolist() == expected.astype(str).values.tolist()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
