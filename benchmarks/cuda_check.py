"""DP training and sampling on a CUDA GPU through the same code as on the CPU, for the machines
this project's CI lacks: the same ε and steps on both devices, held-out perplexity alike, and
per-epoch and sampling speed of the demo model and a 10.9 M one. Prints JSON.

Needs a CUDA build of torch and privgen's dependencies; the records are synthetic (templated
support-ticket lines, no personal data), so nothing else is required.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CITIES = ["Austin", "Denver", "Phoenix", "San Diego", "New York", "Seattle", "Boston", "Miami"]
PRODUCTS = ["Nimbus Phone", "Pulse Earbuds", "Echo Speaker", "Orbit Tablet", "Volt Charger"]
SENTENCES = ["The {p} stopped charging after two weeks.", "My {p} arrived a day early.",
             "Does the {p} support fast charging?", "I want a refund for the {p}.",
             "The box with my {p} arrived crushed.", "I love my new {p}."]


def records(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        p = rng.choice(PRODUCTS)
        out.append(f"{rng.choice(['1970s', '1980s', '1990s', '2000s'])} | "
                   f"{rng.choice(CITIES)} | {p} | {rng.randint(1, 5)} | "
                   + " ".join(rng.choice(SENTENCES).format(p=p)
                              for _ in range(rng.randint(1, 3))))
    return out


def main() -> None:
    import torch

    from models import causal_lm
    from models.records import RecordCodec, RecordGrammar
    from models.tokenizer import ByteTokenizer
    from tasks.train import PrivacyConfig, TrainConfig, build_model, pad_batch, train

    # tasks.evaluate.perplexity, without the evaluate stage's imports (Presidio, spaCy).
    @torch.no_grad()
    def perplexity(model, sequences: list[list[int]], pad_id: int) -> float:
        model.eval()
        ids, mask = pad_batch([torch.tensor(s) for s in sequences], pad_id)
        losses = causal_lm.per_sample_loss(model, ids, mask)
        tokens = mask[:, 1:].sum(1)
        return math.exp(float((losses * tokens).sum() / tokens.sum()))

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    tok = ByteTokenizer()
    seqs = [tok.encode(t, 384) for t in records(2600, 0)]
    held = [tok.encode(t, 384) for t in records(300, 1)]
    out: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                 "runs": [], "sampling": []}
    demo = causal_lm.LMConfig()
    big = causal_lm.LMConfig(n_layer=6, n_head=8, n_embd=384)
    plan = [(demo, mode, device, 2) for mode in ("hooks", "ghost") for device in ("cpu", "cuda")]
    plan += [(big, mode, "cuda", 1) for mode in ("hooks", "ghost")]
    for lm, mode, device, epochs in plan:
        cfg = TrainConfig(model=lm, epochs=epochs, device=device,
                          privacy=PrivacyConfig(grad_sample_mode=mode))
        torch.cuda.synchronize()
        started = time.monotonic()
        model, result = train(seqs, cfg, tok, seed=0)
        if (lm, mode, device) == (demo, "hooks", "cuda"):
            trained = model
        torch.cuda.synchronize()
        seconds = time.monotonic() - started
        params = sum(p.numel() for p in model.parameters())
        out["runs"].append({
            "params": params, "grad_sample_mode": mode, "device": device,
            "trained_on": str(next(model.parameters()).device), "epochs": epochs,
            "epsilon": result.epsilon, "steps": result.steps,
            "noise_multiplier": result.noise_multiplier, "final_loss": result.final_loss,
            "seconds_per_epoch": seconds / epochs,
            "perplexity": perplexity(model.to("cpu"), held, tok.pad_id)})
    # Generation's path on both devices: the trained demo model under the record grammar.
    codec = RecordCodec(("decade", "city", "product", "rating", "message"), ("rating",), (1,))
    grammar = RecordGrammar(codec, tok.eos_id, tok.vocab_size, prompt_length=1,
                            forms={"decade": "^(?:1970s|1980s|1990s|2000s)$"})
    texts = {}
    for device in ("cpu", "cuda"):
        texts[device] = causal_lm.generate(trained.to(device), tok, 256, seed=2,
                                           max_new_tokens=383, grammar=grammar)
    out["grammar_sampling"] = {
        "parsed_cuda": sum(codec.parse(t)[0] is not None for t in texts["cuda"]) / 256,
        "parsed_cpu": sum(codec.parse(t)[0] is not None for t in texts["cpu"]) / 256,
        # Uniforms come from one CPU generator; only float rounding can part the devices.
        "same_text_cpu_cuda": sum(a == b for a, b in zip(texts["cpu"], texts["cuda"],
                                                         strict=True)) / 256,
        "decade_in_form_cuda": sum((codec.parse(t)[0] or {}).get("decade") in
                                   {"1970s", "1980s", "1990s", "2000s"}
                                   for t in texts["cuda"]) / 256,
        "example": texts["cuda"][0]}
    for lm in (demo, big):
        model = build_model(lm, tok).to("cuda").eval()
        for batch in (64, 512):
            causal_lm.generate(model, tok, batch, seed=0, max_new_tokens=64, batch_size=batch)
            torch.cuda.synchronize()
            started = time.monotonic()
            texts = causal_lm.generate(model, tok, 2048, seed=1, max_new_tokens=383,
                                       batch_size=batch)
            torch.cuda.synchronize()
            out["sampling"].append({"params": sum(p.numel() for p in model.parameters()),
                                    "batch_size": batch, "records": len(texts),
                                    "records_per_s": len(texts) / (time.monotonic() - started)})
    pairs = {}
    for r in out["runs"][:4]:
        pairs.setdefault(r["grad_sample_mode"], {})[r["device"]] = r
    out["checks"] = {mode: {
        "same_epsilon": abs(p["cpu"]["epsilon"] - p["cuda"]["epsilon"]) < 1e-9,
        "same_steps": p["cpu"]["steps"] == p["cuda"]["steps"],
        "trained_on_cuda": p["cuda"]["trained_on"].startswith("cuda"),
        # The DP noise comes from each device's own generator: weights differ, quality not.
        "perplexity_ratio_cuda_to_cpu": p["cuda"]["perplexity"] / p["cpu"]["perplexity"],
    } for mode, p in pairs.items()}
    print(json.dumps(out, indent=2, default=lambda o: o.item()))  # numpy scalars


if __name__ == "__main__":
    main()
