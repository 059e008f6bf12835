"""Training across processes: the launcher that runs a family's fit (``fit``) or the causal
LM's loop (``train_lm``) as ``world_size`` worker processes under torchrun (PyTorch's elastic
launcher, ``python -m torch.distributed.run``) on this machine's loopback; rank 0 writes the
model, which the train stage reads back as if it had trained in its own process. The config
section is ``tasks.distributed_config``.

What runs in the workers is ``models.dpsgd.privatize`` or ``tasks.dpsgd.train`` inside a process
group: Opacus' DP-DDP, per-rank Poisson sampling at the global rate, noise once (see
``models.distributed``). ``python -m tasks.distributed JOB`` is the worker entry point: it
reads the job folder ``fit``/``train_lm`` write (README, "Running on a cluster").
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from models import base
from tasks.distributed_config import (  # noqa: F401  (the stage's API, also from here)
    FAMILIES,
    DistributedConfig,
    backend,
    check,
)

if TYPE_CHECKING:
    from models.tokenizer import Tokenizer
    from tasks.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port free on the loopback now, picked by the OS (another process could still take it
    before torchrun binds it: the launch then fails, naming the rendezvous)."""
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


def _job_folder(parent: Path) -> tempfile.TemporaryDirectory:
    """A fresh job folder in ``parent``, after removing any a killed launch left there (they
    hold a copy of the training records; one stage trains in a folder at a time)."""
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(".distributed-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=".distributed-", dir=parent)


def _launch(job: Path, spec: dict, cfg: DistributedConfig,
            on_event: Callable[[str, dict], None], cuda: bool = False) -> None:
    """Write ``spec`` as ``job``'s job.json, run the workers, and hand rank 0's events
    ((name, figures), appended to ``events.jsonl``) to ``on_event`` as they come."""
    (job / "job.json").write_text(json.dumps({**spec, "backend": backend(cfg, cuda),
                                              "launcher": os.getpid()}))
    events, seen = job / "events.jsonl", [0]

    def relay() -> None:
        if events.is_file():  # whole lines only: the last may be half written
            lines = events.read_text().split("\n")[:-1]
            for line in lines[seen[0]:]:
                on_event(*json.loads(line))
            seen[0] = len(lines)

    run(cfg.world_size, ["-m", "tasks.distributed", str(job)], job / "workers.log", poll=relay)


def fit(family: str, section: dict, table: pd.DataFrame, spec: base.TableSpec,
        budget: base.Budget, seed: int, model_dir: Path, cfg: DistributedConfig,
        on_progress: Callable[[dict], None] = lambda m: None) -> base.Generator:
    """Fit ``family`` on ``table`` in ``cfg.world_size`` processes; rank 0 saves it to
    ``model_dir``, which is loaded and returned (its ``fit_result`` is the fit's). Rank 0's
    ``on_progress`` figures reach ``on_progress`` here as they come. The job folder (a copy of
    the table) lives beside ``model_dir`` only while the workers run."""
    with _job_folder(model_dir.parent) as tmp:
        table.to_parquet(Path(tmp) / "table.parquet")
        _launch(Path(tmp), {"kind": "family", "family": family, "section": dict(section),
                            "spec": spec.to_dict(), "budget": asdict(budget), "seed": seed,
                            "model_dir": str(model_dir)},
                cfg, lambda _, m: on_progress(m))
    return base.load(model_dir)


def train_lm(sequences: list[list[int]], cfg: TrainConfig, tokenizer: Tokenizer, seed: int,
             on_epoch_end: Callable[[dict], None] = lambda m: None, *,
             on_end: Callable[[dict], None] = lambda m: None, checkpoint: Path,
             resume_from: Path | None = None,
             on_resume: Callable[[dict], None] = lambda m: None):
    """``tasks.dpsgd.train`` in ``cfg.distributed.world_size`` processes, same arguments and
    result (the model, built here from rank 0's weights, and its ``TrainResult``); the
    callbacks receive rank 0's figures as they come. The job folder lives beside
    ``checkpoint`` while the workers run."""
    import torch

    from tasks.dpsgd import TrainResult, build_model

    callbacks = {"epoch": on_epoch_end, "end": on_end, "resume": on_resume}
    with _job_folder(checkpoint.parent) as tmp:
        job = Path(tmp)
        (job / "sequences.json").write_text(json.dumps(sequences))
        _launch(job, {"kind": "causal_lm", "config": cfg.model_dump(mode="json"), "seed": seed,
                      "checkpoint": str(checkpoint),
                      "resume_from": None if resume_from is None else str(resume_from)},
                cfg.distributed, lambda name, m: callbacks[name](m),
                cuda=cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()))
        model = build_model(cfg.model, tokenizer)
        model.load_state_dict(torch.load(job / "model.pt", weights_only=True))
        result = TrainResult(**json.loads((job / "result.json").read_text()))
    return model, result


def worker(job: Path) -> None:
    """One rank's part of a job of ``fit`` or ``train_lm`` (torchrun sets RANK, WORLD_SIZE,
    MASTER_ADDR and MASTER_PORT); rank 0 writes the events and the outputs."""
    import torch.distributed as dist

    spec = json.loads((job / "job.json").read_text())
    threading.Thread(target=_outlive_not, args=(spec["launcher"],), daemon=True).start()
    if spec["backend"] == "nccl":  # one GPU per rank: "cuda" below means this rank's
        import torch

        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(spec["backend"])
    try:
        rank = dist.get_rank()

        def emit(name: str) -> Callable[[dict], None]:
            def on_event(m: dict) -> None:
                if rank == 0:  # a line at a time: the launcher relays them as they come
                    with (job / "events.jsonl").open("a") as f:
                        f.write(json.dumps([name, m]) + "\n")
            return on_event

        if spec["kind"] == "family":
            _fit_family(job, spec, rank, emit("progress"))
        else:
            _train_lm(job, spec, rank, emit)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _outlive_not(launcher: int) -> None:
    """Exit when the launching process is gone (a killed train stage): an orphaned rank 0 would
    go on writing the checkpoint a resumed run is reading."""
    while True:
        time.sleep(2)
        try:
            os.kill(launcher, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # alive, another user's: cannot happen for our own parent
            pass


def _fit_family(job: Path, spec: dict, rank: int, on_progress: Callable[[dict], None]) -> None:
    budget = base.Budget(**{**spec["budget"], "prior": tuple(spec["budget"]["prior"])})
    gen = base.create(spec["family"], spec["section"])
    gen.fit(pd.read_parquet(job / "table.parquet"), base.TableSpec.from_dict(spec["spec"]),
            budget, seed=spec["seed"], on_progress=on_progress)
    if rank == 0:
        gen.save(spec["model_dir"])


def _train_lm(job: Path, spec: dict, rank: int, emit) -> None:
    import torch

    from tasks.dpsgd import load_tokenizer, train
    from tasks.train_config import TrainConfig

    cfg = TrainConfig.model_validate(spec["config"])
    model, result = train(
        json.loads((job / "sequences.json").read_text()), cfg, load_tokenizer(cfg.model),
        spec["seed"], emit("epoch"), on_end=emit("end"), checkpoint=Path(spec["checkpoint"]),
        resume_from=spec["resume_from"] and Path(spec["resume_from"]),
        on_resume=emit("resume"))
    if rank == 0:
        torch.save(model.state_dict(), job / "model.pt")
        (job / "result.json").write_text(json.dumps(asdict(result)))


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
