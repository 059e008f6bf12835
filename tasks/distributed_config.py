"""The train stage's ``distributed`` section: how many processes DP-SGD runs in and over which
backend, and which fits can (``tasks.distributed`` launches them). Apart from the launcher so
the config imports nothing of the training loop."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.errors import ConfigError

# Families whose whole fit is DP-SGD through ``models.dpsgd.privatize`` (tvae) or
# ``tasks.dpsgd.train`` (the causal LM) and nothing else that would drift apart between
# ranks. dpctgan's plain generator step is not synchronized across ranks yet; dplstm wraps
# Opacus itself in models/dplstm.py (issue 16: still to do).
FAMILIES = ("tvae", "causal_lm")


class DistributedConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # 1: train in the train stage's own process. W > 1: W worker processes on this machine
    # (torchrun on loopback), each sampling its shard of the records; ε is the same as at 1.
    world_size: int = Field(default=1, ge=1)
    # "auto": NCCL when the model trains on GPUs (the causal LM with train.device auto or cuda
    # and a GPU in sight; one GPU per rank), else gloo (PyTorch's CPU backend; tvae is CPU-only).
    backend: Literal["auto", "gloo", "nccl"] = "auto"


def backend(cfg: DistributedConfig, cuda: bool = False) -> str:
    """The process group's backend for a model that trains on GPUs (``cuda``) or not."""
    return cfg.backend if cfg.backend != "auto" else "nccl" if cuda else "gloo"


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
