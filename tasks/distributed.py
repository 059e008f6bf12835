"""Training across processes: the train stage's ``distributed`` section, and the launcher that
runs a family's fit as ``world_size`` worker processes under torchrun (PyTorch's elastic
launcher, ``python -m torch.distributed.run``) on this machine's loopback; rank 0 writes the
model folder, which the train stage then reads back as if the fit had run in its own process.

What runs in the workers is ``models.dpsgd.privatize`` inside a process group: Opacus' DP-DDP,
per-rank Poisson sampling at the global rate, noise once (see ``models.distributed``). On a
cluster, run the worker entry point yourself with torchrun on every node (README, "Running on a
cluster"); ``python -m tasks.distributed JOB`` reads the job folder ``launch`` writes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from models import base
from tasks.errors import ConfigError

log = logging.getLogger(__name__)

# Families whose whole fit is DP-SGD through ``models.dpsgd.privatize`` and nothing else that
# would drift apart between ranks. dpctgan's plain generator step is not synchronized across
# ranks yet; dplstm and the causal LM wrap Opacus themselves (issue 16: still to do).
FAMILIES = ("tvae",)
ROOT = Path(__file__).resolve().parents[1]


class DistributedConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # 1: train in the train stage's own process. W > 1: W worker processes on this machine
    # (torchrun on loopback), each sampling its shard of the records; ε is the same as at 1.
    world_size: int = Field(default=1, ge=1)
    # "auto": NCCL when torch sees a GPU, gloo on the CPU (the only CPU backend PyTorch ships).
    backend: Literal["auto", "gloo", "nccl"] = "auto"


def backend(cfg: DistributedConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def check(family: str, cfg: DistributedConfig, private: bool) -> bool:
    """Whether ``family``'s fit runs across processes. A non-private fit (the audit's control)
    trains in one process: nothing to gain in accounting, and its empty batches are skipped
    per rank, which a collective step cannot. ConfigError for a private fit of a family that
    cannot train distributed."""
    if cfg.world_size == 1 or not private:
        return False
    if family not in FAMILIES:
        raise ConfigError(f"train.distributed.world_size={cfg.world_size}: family {family} "
                          f"trains in one process only (distributed: {', '.join(FAMILIES)}); "
                          "set train.distributed.world_size=1 or another train.family")
    return True


def free_port() -> int:
    """A port free on the loopback now (the OS picks it; a race with another process that
    binds it first is possible and fails the launch, which is then retried by the caller)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(world_size: int, target: list[str], port: int | None = None) -> list[str]:
    """The torchrun command line for ``world_size`` workers of ``target`` (``-m module args``
    or ``script args``) on one node, rendezvous on 127.0.0.1."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
            f"--nproc-per-node={world_size}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port or free_port()}", *target]


def run(world_size: int, target: list[str], log_path: Path, timeout: float | None = None,
        poll: Callable[[], None] = lambda: None) -> None:
    """Run ``target`` under torchrun, workers' output to ``log_path``; ``poll`` is called
    about twice a second while they run. RuntimeError naming the log if a worker fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if sys.platform == "linux":  # gloo on loopback, whatever the host name resolves to
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.Popen(torchrun(world_size, target), stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            while proc.poll() is None:
                poll()
                if timeout is not None and time.monotonic() - started > timeout:
                    raise TimeoutError(f"distributed training ran over {timeout:.0f} s")
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    poll()
    if proc.returncode != 0:
        # A worker's own exception ("[rank1]: ValueError: ..."), else torchrun's summary.
        lines = log_path.read_text().splitlines()
        errors = [x for x in lines if "Error" in x and x.startswith("[rank")] or \
            [x for x in lines if "Error" in x]
        raise RuntimeError(f"distributed training failed (exit {proc.returncode}): "
                           f"{errors[-1] if errors else 'see ' + str(log_path)}")


def fit(family: str, section: dict, table: pd.DataFrame, spec: base.TableSpec,
        budget: base.Budget, seed: int, model_dir: Path, cfg: DistributedConfig,
        on_progress: Callable[[dict], None] = lambda m: None) -> base.Generator:
    """Fit ``family`` on ``table`` in ``cfg.world_size`` processes; rank 0 saves it to
    ``model_dir``, which is loaded and returned (its ``fit_result`` is the fit's). Rank 0's
    ``on_progress`` figures reach ``on_progress`` here as they come. The job folder (a copy of
    the table) lives beside ``model_dir`` only while the workers run."""
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".distributed-", dir=model_dir.parent) as tmp:
        job = Path(tmp)
        table.to_parquet(job / "table.parquet")
        (job / "job.json").write_text(json.dumps({
            "family": family, "section": dict(section), "spec": spec.to_dict(),
            "budget": asdict(budget), "seed": seed, "model_dir": str(model_dir),
            "backend": backend(cfg)}))
        progress, seen = job / "progress.jsonl", [0]

        def relay() -> None:
            if progress.is_file():  # whole lines only: the last may be half written
                lines = progress.read_text().split("\n")[:-1]
                for line in lines[seen[0]:]:
                    on_progress(json.loads(line))
                seen[0] = len(lines)

        run(cfg.world_size, ["-m", "tasks.distributed", str(job)], job / "workers.log",
            poll=relay)
    return base.load(model_dir)


def worker(job: Path) -> None:
    """One rank's part of ``fit``'s job (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
    import torch.distributed as dist

    spec = json.loads((job / "job.json").read_text())
    dist.init_process_group(spec["backend"])
    try:
        rank = dist.get_rank()
        budget = base.Budget(**{**spec["budget"], "prior": tuple(spec["budget"]["prior"])})
        gen = base.create(spec["family"], spec["section"])

        def on_progress(m: dict) -> None:
            if rank == 0:  # appended line by line: the launcher relays them as they come
                with (job / "progress.jsonl").open("a") as f:
                    f.write(json.dumps(m) + "\n")

        table = pd.read_parquet(job / "table.parquet")
        gen.fit(table, base.TableSpec.from_dict(spec["spec"]), budget, seed=spec["seed"],
                on_progress=on_progress)
        if rank == 0:
            gen.save(spec["model_dir"])
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
