"""Sampling speed of the demo model: privgen's batched generation vs one `generate` per record.

Prints JSON: tokens/s at batch 1, 32 and 128, the naive per-record loop, the speed-up, and the
fraction of this CPU's measured matmul peak the best batch reaches (FLOPs per token estimated
as 2 × parameters + attention over the running context).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import causal_lm  # noqa: E402
from models.records import RecordCodec, RecordGrammar  # noqa: E402
from models.tokenizer import ByteTokenizer  # noqa: E402

TOK = ByteTokenizer()
CODEC = RecordCodec(("birth_date", "postcode", "city", "product", "channel", "rating",
                     "created_at", "message"), ("rating",), (1,))


def matmul_peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Float32 GEMM throughput on all torch threads: the practical arithmetic ceiling."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def tokens_per_second(model, n: int, batch: int, grammar: bool) -> tuple[float, int]:
    started = time.perf_counter()
    texts = causal_lm.generate(
        model, TOK, n, seed=1, max_new_tokens=model.config.n_positions - 1, batch_size=batch,
        grammar=RecordGrammar(CODEC, TOK.eos_id, TOK.vocab_size, 1) if grammar else None)
    seconds = time.perf_counter() - started
    tokens = sum(len(t.encode()) + 1 for t in texts)
    return tokens / seconds, tokens


def naive_loop(model, n: int) -> float:
    """One HF generate call per record, as a user without privgen would write it."""
    tokens, started = 0, time.perf_counter()
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(n):
            out = model.generate(torch.tensor([[TOK.bos_id]]), do_sample=True,
                                 max_new_tokens=model.config.n_positions - 1,
                                 eos_token_id=TOK.eos_id, pad_token_id=TOK.pad_id,
                                 attention_mask=torch.ones(1, 1, dtype=torch.long))
            tokens += out.shape[1] - 1
    return tokens / (time.perf_counter() - started)


def main() -> None:
    model_dir = os.environ.get("PRIVGEN_BENCH_MODEL")
    if model_dir:
        model, _ = causal_lm.load(Path(model_dir))
    else:
        torch.manual_seed(0)
        model = causal_lm.build(causal_lm.LMConfig(), TOK).eval()
    params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    # Per token: 2 FLOPs per weight, plus QK^T and AV over an average context of T/2.
    flops_per_token = 2 * params + 2 * cfg.n_layer * cfg.n_embd * cfg.n_positions
    results = {}
    for batch, n in ((1, 8), (32, 64), (128, 256)):
        tps, tokens = tokens_per_second(model, n, batch, grammar=True)
        results[f"batch_{batch}"] = {"tokens_per_s": round(tps), "tokens": tokens}
    naive = naive_loop(model, 8)
    best = max(v["tokens_per_s"] for v in results.values())
    peak = matmul_peak_gflops()
    print(json.dumps({
        "model_parameters": params, "trained_weights": bool(model_dir),
        "privgen": results, "naive_generate_per_record_tokens_per_s": round(naive),
        "speedup_best_batch_vs_naive": round(best / naive, 1),
        "flops_per_token_estimate": flops_per_token,
        "cpu_matmul_peak_gflops": round(peak, 1),
        "fraction_of_peak_at_best_batch": round(best * flops_per_token / (peak * 1e9), 4),
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
