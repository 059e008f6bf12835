"""Batched sampling from the GPT-2 causal LM: one prefill, then one token per row and step
over a preallocated key/value cache, finished rows dropped from the batch as they end.

A step of a model this small costs memory traffic over the cache and per-call overhead, not
arithmetic. Hugging Face's ``generate`` grows its cache by concatenation (a copy of the whole
cache per step), runs its processors on every row and keeps computing rows that have finished
until the longest one ends."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import DynamicCache, GPT2LMHeadModel

from models.records import RecordGrammar
from models.tokenizer import Tokenizer


class KVCache:
    """Keys and values of every layer, [L, B, H, T, D], written one position at a time; the
    rows still sampling are the first ones of the batch."""

    def __init__(self, model: GPT2LMHeadModel, rows: int, length: int):
        cfg = model.config
        shape = (cfg.n_layer, rows, cfg.n_head, length, cfg.n_embd // cfg.n_head)
        self.k = torch.empty(shape, dtype=model.dtype, device=model.device)
        self.v = torch.empty_like(self.k)

    def keep(self, rows: torch.Tensor, filled: int) -> None:
        """Move the first ``filled`` positions of ``rows`` to the front of the batch."""
        for t in (self.k, self.v):
            t[:, : len(rows), :, :filled] = t[:, rows, :, :filled]


def supported(model: torch.nn.Module) -> bool:
    """Whether ``forward`` below implements ``model``: GPT-2 with its default blocks."""
    cfg = model.config
    return (isinstance(model, GPT2LMHeadModel) and not cfg.add_cross_attention
            and cfg.scale_attn_weights and not cfg.scale_attn_by_inverse_layer_idx
            and not cfg.reorder_and_upcast_attn
            and cfg.activation_function in ("gelu_new", "gelu_pytorch_tanh"))


def _steps(model: torch.nn.Module, rows: int, length: int):
    """(step, keep) for ``model``: ``step(ids, pos)`` gives next-token logits, ``keep(rows,
    filled)`` drops the other rows from the cache. privgen's GPT-2 forward over a preallocated
    cache where it applies, else the model's own forward over Hugging Face's cache."""
    if supported(model):
        cache = KVCache(model, rows, length)
        return (lambda ids, pos: forward(model, ids, pos, cache)), cache.keep
    hf_cache = DynamicCache()

    def step(ids: torch.Tensor, pos: int) -> torch.Tensor:
        mask = torch.ones(ids.shape[0], pos + ids.shape[1], dtype=torch.long, device=ids.device)
        return model(input_ids=ids, attention_mask=mask, past_key_values=hf_cache,
                     use_cache=True).logits[:, -1]

    return step, lambda keep, filled: hf_cache.reorder_cache(keep)


def forward(model: GPT2LMHeadModel, ids: torch.Tensor, pos: int,
            cache: KVCache) -> torch.Tensor:
    """Next-token logits [B, V] after ``ids`` [B, S] at positions pos … pos+S-1, whose keys and
    values join ``cache``; the blocks' own layers, attention over the cache written here."""
    tr = model.transformer
    b, s = ids.shape
    width, heads = model.config.n_embd, model.config.n_head
    end = pos + s
    x = tr.wte(ids) + tr.wpe.weight[pos:end]                                  # [B, S, E]
    # Query i sees the keys up to its own position pos + i.
    hidden = None if s == 1 else ~torch.ones(s, end, dtype=torch.bool,
                                             device=ids.device).tril(pos)
    for layer, block in enumerate(tr.h):
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(width, dim=2)     # [B, S, E] each
        q, k, v = (t.view(b, s, heads, -1).transpose(1, 2) for t in (q, k, v))  # [B, H, S, D]
        cache.k[layer, :b, :, pos:end] = k
        cache.v[layer, :b, :, pos:end] = v
        keys, values = cache.k[layer, :b, :, :end], cache.v[layer, :b, :, :end]  # [B, H, T, D]
        # A contiguous query lets the batched product run as one bmm over B·H: about 2x.
        q = (q / math.sqrt(q.shape[-1])).contiguous()
        w = q @ keys.transpose(-1, -2)                                        # [B, H, S, T]
        if hidden is not None:
            w = w.masked_fill(hidden, -torch.inf)
        a = (w.softmax(-1) @ values).transpose(1, 2).reshape(b, s, width)     # [B, S, E]
        x = x + block.attn.c_proj(a)
        # gelu_new as one fused kernel rather than HF's five elementwise ones.
        h = F.gelu(block.mlp.c_fc(block.ln_2(x)), approximate="tanh")
        x = x + block.mlp.c_proj(h)
    return model.lm_head(tr.ln_f(x[:, -1]))                                   # [B, V]


def draw(logits: torch.Tensor, u: torch.Tensor, temperature: float, top_k: int,
         top_p: float) -> torch.Tensor:
    """One token per row by inverse transform of one uniform ``u`` per row, after temperature,
    top-k and nucleus (top-p) filtering; a row's token depends on its logits and ``u`` only."""
    logits = logits / temperature
    if not top_k and top_p >= 1.0:
        return _inverse_cdf(logits, u)
    logits, order = logits.sort(dim=1, descending=True, stable=True)
    if top_k:
        logits[:, top_k:] = -torch.inf
    if top_p < 1.0:
        probs = logits.softmax(1)
        # Holtzman et al.: the smallest set of likeliest tokens holding mass top_p.
        logits = logits.masked_fill(probs.cumsum(1) - probs >= top_p, -torch.inf)
    return order.gather(1, _inverse_cdf(logits, u)[:, None]).squeeze(1)


def _inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(1)
    cdf = probs.cumsum(1)
    token = torch.searchsorted(cdf, (u * cdf[:, -1]).to(cdf.dtype)[:, None], right=True)
    token = token.squeeze(1).clamp_(max=probs.shape[1] - 1)
    # u × total can round up to the total; the likeliest token then stands in.
    return torch.where(probs.gather(1, token[:, None]).squeeze(1) > 0, token, probs.argmax(1))


@torch.inference_mode()
def sample(model: torch.nn.Module, prompt: list[int], rows: int, *, max_new_tokens: int,
           generator: torch.Generator, eos_id: int, pad_id: int, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, grammar: RecordGrammar | None = None,
           compact: bool = True) -> torch.Tensor:
    """[rows, max_new_tokens] sampled token ids, ``pad_id`` after a row's ``eos_id``.

    Every step draws one uniform per original row, used or not, so a row's tokens do not
    depend on which other rows are still in the batch: dropping finished rows (``compact``)
    changes the work, not the result."""
    start = len(prompt)
    positions = getattr(model.config, "n_positions", None) \
        or model.config.max_position_embeddings
    if start + max_new_tokens > positions:
        raise ValueError(f"{start} prompt + {max_new_tokens} new tokens exceed the model's "
                         f"{positions} positions")
    device = model.device
    step, keep_rows = _steps(model, rows, start + max_new_tokens)
    out = torch.full((rows, max_new_tokens), pad_id, device=device)
    active = torch.arange(rows, device=device)  # the original row of each batch row
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    state = grammar.to(device).start(rows) if grammar else None
    logits = step(torch.tensor([prompt], device=device).expand(rows, -1), 0)
    for i in range(max_new_tokens):
        # Drawn on the CPU generator on every device, so a seed gives the same uniforms.
        u = torch.rand(rows, generator=generator, dtype=torch.float64).to(device)[active]
        if state is not None:
            logits = grammar.constrain(state, logits)
        token = draw(logits.float(), u, temperature, top_k, top_p).masked_fill_(done, pad_id)
        out[active, i] = token
        done |= token == eos_id
        if done.all() or i + 1 == max_new_tokens:
            break
        # Compact once an eighth of the batch has finished: the copy costs about one step.
        if compact and int(done.sum()) * 8 >= len(active):
            keep = (~done).nonzero().squeeze(1)
            keep_rows(keep, start + i)
            active, token, done = active[keep], token[keep], done[keep]
            state = state.select(keep) if state is not None else None
        if state is not None:
            grammar.advance(state, token)
        logits = step(token[:, None], start + i)
    return out


def generate(model: torch.nn.Module, tokenizer: Tokenizer, n: int, *, seed: int,
             max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, batch_size: int = 128,
             grammar: RecordGrammar | None = None, compact: bool = True) -> list[str]:
    """``n`` texts sampled from BOS, ``batch_size`` rows at a time; the same seed and batch
    size give the same texts."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    for begin in range(0, n, batch_size):
        ids = sample(model, [tokenizer.bos_id], min(batch_size, n - begin),
                     max_new_tokens=max_new_tokens, generator=generator,
                     eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                     temperature=temperature, top_k=top_k or 0,
                     top_p=1.0 if top_p is None else top_p, grammar=grammar, compact=compact)
        texts += [tokenizer.decode(row) for row in ids.tolist()]
    return texts
