"""The peers' own virtual environment and one peer run in it, with its result kept on disk.

smartnoise-synth 1.0.8 pins opacus<0.15 and mbi<2, which cannot share privgen's environment
(Opacus 1.6, mbi 2), so the peers live in a venv of their own, outside the repository
(``PRIVGEN_PEERS_VENV``, else ``~/.cache/privgen/peers-venv``), and run as a subprocess
(``peer_runner.py``) that reads a CSV and settings and writes the synthetic CSV and timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "peer_runner.py"
# torch pinned as privgen's: a newer one pulls a multi-GB CUDA build; 2.13.0 is the CPU wheel.
REQUIREMENTS = ("torch==2.13.0", "smartnoise-synth==1.0.8", "sdv==2.0.0")


def venv_dir() -> Path:
    default = Path.home() / ".cache" / "privgen" / "peers-venv"
    return Path(os.environ.get("PRIVGEN_PEERS_VENV", default))


def ensure_venv(log=print) -> Path:
    """The venv's python, creating the venv and installing the peers first if it has none
    (several minutes). RuntimeError with pip's last lines when the install fails."""
    python = venv_dir() / "bin" / "python"
    probe = [str(python), "-c", "import snsynth, sdv"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    log(f"creating the peers' venv in {venv_dir()} (a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir())], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError("installing the peers failed: "
                           + " / ".join((done.stdout + done.stderr).splitlines()[-5:]))
    return python


def run_peer(settings: dict, folder: Path, timeout: float) -> tuple[pd.DataFrame, dict]:
    """Run ``peer_runner.py`` with ``settings`` (its ``train_csv`` already written) in
    ``folder``; returns the synthetic frame and the runner's result. A finished run in
    ``folder`` with the same settings is read, not redone. RuntimeError when the peer fails
    or outlives ``timeout`` seconds (the message says which, with the peer's last lines)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {**settings, "out_csv": str(folder / "synthetic.csv"),
                "result_json": str(folder / "result.json")}
    path = folder / "settings.json"
    result = folder / "result.json"
    same = path.exists() and json.loads(path.read_text()) == settings
    if not (same and result.exists()):
        result.unlink(missing_ok=True)
        path.write_text(json.dumps(settings, indent=1))
        env = {**os.environ, "OMP_NUM_THREADS": str(settings.get("threads", 1))}
        try:
            done = subprocess.run([str(ensure_venv()), str(RUNNER), str(path)], env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{settings['method']} ran past {timeout:.0f} s") from e
        (folder / "runner.log").write_text(done.stdout + done.stderr)
        if done.returncode or not result.exists():
            tail = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()][-3:]
            raise RuntimeError(f"{settings['method']} failed: " + " / ".join(tail))
    dtypes = {c: "string" for c in settings["categorical"]}
    synth = pd.read_csv(folder / "synthetic.csv", dtype=dtypes, keep_default_na=False)
    return synth, json.loads(result.read_text())
