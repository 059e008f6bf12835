"""The causal LM's epoch checkpoints (``tasks.dpsgd.train``): written atomically, with every
random state a resume needs to continue the run it interrupted."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def save(path: Path, state: dict) -> None:
    """Temp file + rename: a kill mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def rng_state(sampler_generator: torch.Generator | None) -> dict:
    """Every RNG a resumed run must continue: torch's, numpy's, Python's, the sampler's."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
            "sampler": sampler_generator.get_state() if sampler_generator else None}


def restore_rng(state: dict, sampler_generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if sampler_generator is not None and state["sampler"] is not None:
        sampler_generator.set_state(state["sampler"])
