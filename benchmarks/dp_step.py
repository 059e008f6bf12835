"""Cost of privacy per training step: DP-SGD (hooks, ghost clipping) beside the non-private step.

Same model, same logical batch of full-length random byte sequences, same code as training
(``tasks.train._privatize`` and its criterion). Each mode runs in a fresh subprocess so its peak
resident memory is its own; ``rss_step_mb`` is the peak minus the resident size after the model is
built. Prints one JSON object: per model, per mode, median step seconds and the ratios to the
non-private step.

    python benchmarks/dp_step.py [--models demo,10m] [--batch 64] [--seq 384] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

MODELS = {
    "demo": {},                                                   # models.causal_lm.LMConfig()
    "10m": {"n_layer": 6, "n_head": 6, "n_embd": 384},            # ≈ 11 M parameters
}
MODES = ("nonprivate", "hooks", "ghost")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def one(model_name: str, mode: str, batch: int, seq: int, steps: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from models import causal_lm
    from models.tokenizer import ByteTokenizer
    from tasks.train import PrivacyConfig, SequenceDataset, TrainConfig, _privatize

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    tok = ByteTokenizer()
    lm = causal_lm.LMConfig(block_size=max(seq, 16), **MODELS[model_name])
    model = causal_lm.build(lm, tok)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 256, (batch, seq))
    mask = torch.ones_like(ids)
    if mode == "nonprivate":
        def criterion(losses):
            return losses.sum() / batch
    else:
        cfg = TrainConfig(model=lm, batch_size=batch, physical_batch_size=batch,
                          privacy=PrivacyConfig(grad_sample_mode=mode))
        loader = DataLoader(SequenceDataset([[0]] * (batch * 10)), batch_size=batch)
        model, optimizer, criterion, _, _ = _privatize(model, optimizer, loader, cfg,
                                                       delta=1e-5, noise_multiplier=1.0)
    model.train()
    base = _rss_mb()
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and hooks
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(causal_lm.per_sample_loss(model, ids, mask)).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"params": params, "step_s": statistics.median(times[1:]),
            "rss_peak_mb": peak, "rss_step_mb": peak - base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,10m")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=384)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.batch, args.seq, args.steps)))
        return
    import torch
    out = {"batch": args.batch, "seq": args.seq, "steps": args.steps,
           "threads": torch.get_num_threads(), "models": {}}
    for name in args.models.split(","):
        runs = {}
        for mode in MODES:
            cmd = [sys.executable, __file__, "--one", name, mode, "--batch", str(args.batch),
                   "--seq", str(args.seq), "--steps", str(args.steps)]
            runs[mode] = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                   text=True).stdout.strip().splitlines()[-1])
        base = runs["nonprivate"]
        for mode in MODES[1:]:
            runs[mode]["time_ratio"] = runs[mode]["step_s"] / base["step_s"]
            runs[mode]["peak_memory_ratio"] = runs[mode]["rss_peak_mb"] / base["rss_peak_mb"]
            runs[mode]["step_memory_ratio"] = runs[mode]["rss_step_mb"] / base["rss_step_mb"]
        out["models"][name] = {"params": base["params"], **runs}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
