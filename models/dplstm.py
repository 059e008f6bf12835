"""A word-level LSTM language model over whole records, trained with DP-SGD (Abadi et al. 2016)
through Opacus' ``DPLSTM`` layer; the model of pytorch/examples' word_language_model.

A record is one token per structured field (``models.vocab.RecordCodec``), then each text field's
words ending in ``<eos>``. Alone the model samples whole records; ``complete`` feeds a row's
structured values as the prompt and samples only its text (the text part of ``hybrid``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from models import accounting, dpsgd
from models.base import Budget, FitResult, Generator, Plan, Proposal, TableSpec
from models.replay import ReplayIndex
from models.vocab import RecordCodec, Vocabulary

WEIGHTS, VOCAB, GUIDANCE = "dplstm.safetensors", "vocab.json", "guidance.safetensors"


class DPLSTMConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # wordfreq's top-K English words: 3,000 leave about 15 % of the review sentences' words
    # <unk> (dishes and names), while the output layer (hidden × vocabulary) stays small
    # enough for DP noise and for Opacus' per-sample gradients on 2 CPU cores.
    vocab_k: int = Field(default=3000, ge=10)
    embed: int = Field(default=48, ge=4)
    hidden: int = Field(default=96, ge=4)
    layers: int = Field(default=1, ge=1)
    # The demo's 2,700 tickets at 256 per batch: 11 steps an epoch, 55 steps in all, aimed at
    # 2–3 minutes on 2 free cores (Opacus' DPLSTM computes per-sample gradients step by step;
    # estimated from the review-sentence runs, not yet timed on the demo).
    epochs: int = Field(default=5, ge=1)
    # Expected (Poisson) batch size; large batches give DP-SGD its best signal-to-noise ratio.
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=0.02, gt=0)
    # Words kept per text field in training, and the most sampled before a text is cut off
    # (the demo's messages: median 42, 95th percentile 72; a cut drops mostly sign-offs).
    max_words: int = Field(default=48, ge=4)
    bins: int = Field(default=10, ge=2)
    # Length of the word sequences a sampled text may not share with the training text.
    replay_n: int = Field(default=8, ge=3)
    # Keyword guidance (models.guidance): the share of the ρ left for this model spent on a
    # Gaussian histogram of which words each structured value's texts use (0: none); the
    # distinct words a record adds to it (its sensitivity is √(fields · words)); and the weight
    # of its log-ratios added to the next-word logits when sampling. At ε = 8 the histogram
    # carries most of the value-to-word signal (review sentences, sentiment TSTR ROC AUC over
    # two sample seeds: no guidance 0.66; 0.1/32/1 0.75; 0.3/16/2 0.77; demo product accuracy
    # 0.55 → 0.97), so it gets 30 % of ρ; a text's first 16 distinct words hold its topic.
    guidance_share: float = Field(default=0.3, ge=0.0, lt=1.0)
    guidance_words: int = Field(default=16, ge=1)
    guidance_weight: float = Field(default=2.0, ge=0.0)


class LSTMLM(nn.Module):
    """Embedding → LSTM → linear head, with the record's structured tokens (its prompt) added to
    the input of every text position: a conditional LM, so each word sees the values directly
    rather than through a state that DP-SGD's few noisy steps barely train to keep them.
    ``dp``: Opacus' DPLSTM, whose per-sample gradients Opacus computes (its state dict has
    ``nn.LSTM``'s names, so the fast layer samples afterwards)."""

    def __init__(self, vocab: int, cfg: DPLSTMConfig, dp: bool):
        super().__init__()
        from opacus.layers import DPLSTM

        self.embedding = nn.Embedding(vocab, cfg.embed)
        lstm = DPLSTM if dp else nn.LSTM
        self.lstm = lstm(cfg.embed, cfg.hidden, num_layers=cfg.layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, vocab)

    def forward(self, ids: torch.Tensor, fields: int | None = None, state=None,
                prompt: torch.Tensor | None = None):
        """ids [B, T] → logits [B, T, V] and the LSTM state after the last position. Whole
        records (``fields``: structured tokens after BOS): positions from ``fields`` on get the
        sum of those tokens' embeddings; one step at a time: ``prompt`` [B, E] is added."""
        x = self.embedding(ids)                                             # [B, T, E]
        if fields is not None:
            prompt = x[:, 1 : 1 + fields].sum(1)                            # [B, E]
            after = (torch.arange(ids.shape[1]) >= fields).to(x.dtype)      # [T]
            x = x + after[None, :, None] * prompt[:, None]
        elif prompt is not None:
            x = x + prompt[:, None]
        out, state = self.lstm(x, state)                                    # [B, T, H]
        return self.head(out), state


def record_loss(logits: torch.Tensor, ids: torch.Tensor, pad: int) -> torch.Tensor:
    """Mean over the batch of each record's mean next-token NLL, so a record's gradient has
    the same scale whatever its length (clipping then bounds each record alike)."""
    target = ids[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none",
                          ignore_index=pad)                                  # [B, T-1]
    return (nll.sum(1) / (target != pad).sum(1).clamp(min=1)).mean()


class DPLSTM(Generator):
    family = "dplstm"
    config_class = DPLSTMConfig
    has_log_prob = True

    # -- encoding ---------------------------------------------------------------------------
    def _build_codes(self, spec: TableSpec, vocab: Vocabulary | None = None) -> None:
        self.vocab = vocab or Vocabulary.public(spec, self.config.vocab_k)
        self.codec = RecordCodec(spec, len(self.vocab), self.config.bins)
        self.n_tokens = len(self.vocab) + self.codec.size
        # Text positions may take any word but <unk> (never sampled) and the structured tokens.
        mask = torch.full((self.n_tokens,), -torch.inf)
        mask[: len(self.vocab)] = 0.0
        mask[[self.vocab.pad, self.vocab.bos, self.vocab.unk]] = -torch.inf
        self.text_mask = mask
        self.field_masks = []
        for i in range(len(self.codec.fields)):
            m = torch.full((self.n_tokens,), -torch.inf)
            m[list(self.codec.allowed(i))] = 0.0
            self.field_masks.append(m)

    def encode(self, row: Mapping) -> list[int]:
        """BOS, structured tokens, then each text field's words (at most ``max_words``) + EOS."""
        ids = [self.vocab.bos, *self.codec.prefix(row)]
        for f in self.spec.text:
            value = row.get(f.name)
            text = self.vocab.encode(value if isinstance(value, str) else "")
            ids += [*text[: self.config.max_words], self.vocab.eos]
        return ids

    def _batch(self, rows: list[dict]) -> torch.Tensor:
        seqs = [self.encode(r) for r in rows]
        out = torch.full((len(seqs), max(map(len, seqs))), self.vocab.pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s)
        return out

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """DP-SGD over Poisson batches of rate q = batch_size / N for ``epochs`` · ⌈1/q⌉ steps,
        σ the least noise meeting ``budget`` composed with its prior; without noise or clipping
        when ``budget.enabled`` is false. ValueError if the prior alone reaches the target."""
        from opacus import PrivacyEngine
        from opacus.data_loader import DPDataLoader

        started, cfg = time.monotonic(), self.config
        self.spec = spec
        self._build_codes(spec)
        rows = table.to_dict("records")
        data = self._batch(rows)
        n = len(data)
        q, steps = dpsgd.sampling(n, cfg.batch_size, cfg.epochs)
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = LSTMLM(self.n_tokens, cfg, dp=budget.enabled)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data),
                                             batch_size=max(1, round(q * n)), generator=gen)
        prior = list(budget.prior) if budget.enabled else []
        events, guidance_params = self._fit_guidance(rows, budget, prior, seed)
        sigma = 0.0
        if budget.enabled:
            sigma = accounting.noise_for(budget.epsilon, budget.delta, prior + events, q,
                                         steps, budget.accountant)
            events = [*events, accounting.gaussian(sigma, q, steps)]
            module, optimizer, loader = PrivacyEngine(secure_mode=budget.secure_mode)\
                .make_private(module=net, optimizer=optimizer, data_loader=loader,
                              noise_multiplier=sigma, max_grad_norm=budget.max_grad_norm,
                              poisson_sampling=True,
                              noise_generator=None if budget.secure_mode else gen)
        else:
            module, loader = net, DPDataLoader.from_data_loader(loader, generator=gen)
        module.train()
        n_fields = len(self.codec.fields)
        step, loss_sum, loss_n, final_loss = 0, 0.0, 0, math.nan
        while step < steps:
            for (batch,) in loader:
                if step >= steps:
                    break
                step += 1
                optimizer.zero_grad(set_to_none=True)
                if not len(batch):  # skipping a step only lowers the privacy cost
                    continue
                width = int((batch != self.vocab.pad).sum(1).max())
                batch = batch[:, :width]
                loss = record_loss(module(batch, n_fields)[0], batch, self.vocab.pad)
                loss.backward()
                optimizer.step()
                loss_sum, loss_n = loss_sum + loss.item() * len(batch), loss_n + len(batch)
                if step % (steps // cfg.epochs) == 0:
                    epoch = step // (steps // cfg.epochs)
                    on_progress({"epoch": epoch, "loss": loss_sum / max(loss_n, 1)})
                    final_loss, loss_sum, loss_n = loss_sum / max(loss_n, 1), 0.0, 0
        self.net = LSTMLM(self.n_tokens, cfg, dp=False)
        for name in ("embedding", "lstm", "head"):  # DPLSTM renames its keys only as a root
            getattr(self.net, name).load_state_dict(getattr(net, name).state_dict())
        self.net.eval()
        self.replay = ReplayIndex.build((t for f in spec.text for t in table[f.name]),
                                        cfg.replay_n)
        eps = accounting.epsilon(prior + events, budget.delta, budget.accountant) \
            if budget.enabled else math.inf
        self.fit_result = FitResult(
            epsilon=eps, delta=budget.delta, accountant=budget.accountant,
            mechanism=("Gaussian keyword histogram (zCDP) + " if events[:-1] else "")
            + "DP-SGD (Opacus DPLSTM)" if budget.enabled else "none",
            private=budget.enabled,
            events=events, seconds=time.monotonic() - started, final_loss=final_loss,
            epsilon_check=accounting.epsilon_check(prior + events, budget.delta)
            if budget.enabled else None,
            params={"vocabulary": f"public (wordfreq top-{cfg.vocab_k} + released values)"
                    + ("; which words go with which structured value: paid for (Gaussian "
                       "keyword histogram)" if guidance_params.get("guidance_rho") else ""),
                    "vocab_size": self.n_tokens, "sigma": sigma, "sample_rate": q,
                    "steps": steps, "max_grad_norm": budget.max_grad_norm,
                    **guidance_params})
        return self.fit_result

    def plan(self, n_records: int, budget: Budget, spec: TableSpec | None = None) -> Plan:
        """The keyword histogram's ρ (when the spec has structured values to guide by), then
        DP-SGD's σ for ``dpsgd.sampling``'s q and steps, as ``fit`` will find them."""
        guided = self.config.guidance_share > 0 and (spec is None or bool(spec.structured))
        prior = [accounting.zcdp(self._guidance_rho(budget, list(budget.prior)))] \
            if budget.enabled and guided else []
        return dpsgd.plan(self, n_records, self.config.batch_size, self.config.epochs, budget,
                          spec, ("Gaussian keyword histogram (zCDP) + " if prior else "")
                          + "DP-SGD (Opacus DPLSTM)", prior=prior)

    def _guidance_rho(self, budget: Budget, prior: list[dict]) -> float:
        return self.config.guidance_share * accounting.rho_for(budget.epsilon, budget.delta,
                                                               prior)

    def _fit_guidance(self, rows: list[dict], budget: Budget, prior: list[dict],
                      seed: int) -> tuple[list[dict], dict]:
        """The keyword-guidance table (``self.guidance`` [structured tokens, V], or None) and
        its privacy events: ρ = share · the ρ a zCDP release could spend alone after ``prior``
        (Gaussian mechanism, models.guidance); exact counts for a non-private model."""
        from models import guidance

        cfg, self.guidance = self.config, None
        if cfg.guidance_share <= 0 or not self.codec.fields:
            return [], {}
        offset = len(self.vocab)
        prefixes = np.array([self.codec.prefix(r) for r in rows], dtype=np.int64) - offset
        texts = [[w for f in self.spec.text
                  for w in self.vocab.encode(r.get(f.name) if isinstance(r.get(f.name), str)
                                             else "")[: cfg.max_words]] for r in rows]
        eligible = self._eligible()
        counts = guidance.word_counts(prefixes, texts, self.codec.size, eligible,
                                      cfg.guidance_words)
        events, sigma = [], 0.0
        if budget.enabled:
            rho = self._guidance_rho(budget, prior)
            counts, sigma = guidance.release(counts, len(self.codec.fields), cfg.guidance_words,
                                             rho, np.random.default_rng(seed))
            events = [accounting.zcdp(rho)]
        fields = [range(self.codec.starts[i] - offset, self.codec.starts[i + 1] - offset)
                  for i in range(len(self.codec.fields))]
        # Without noise a pseudo-count of ½ stands in for the noise scale.
        self.guidance = torch.tensor(guidance.bias_table(counts, fields, max(sigma, 0.25),
                                                         eligible), dtype=torch.float32)
        return events, {"guidance_rho": events[0]["rho"] if events else None,
                        "guidance_sigma": sigma, "guidance_words": cfg.guidance_words}

    def _eligible(self) -> np.ndarray:
        """[V] whether a vocabulary token is a word or placeholder (what guidance counts)."""
        return np.array([i not in (self.vocab.pad, self.vocab.bos, self.vocab.eos,
                                   self.vocab.unk) and (t[:1].isalpha() or t.startswith("<"))
                         for i, t in enumerate(self.vocab.tokens)])

    def _coverage(self, prefixes: torch.Tensor):
        """The guidance bias for rows with structured tokens ``prefixes`` [B, F], or None."""
        from models.guidance import Coverage

        if getattr(self, "guidance", None) is None or self.config.guidance_weight == 0:
            return None
        return Coverage(self.guidance, prefixes - len(self.vocab), self.config.guidance_weight,
                        self.n_tokens)

    # -- likelihood -----------------------------------------------------------------------------
    @torch.no_grad()
    def _token_log_probs(self, rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, T-1] log-probability of each token after BOS (0 at padding) and the [N, T-1]
        mask of text positions (words and their EOS)."""
        ids = self._batch(rows)
        n_fields = len(self.codec.fields)
        logits = self.net(ids, n_fields)[0][:, :-1]                         # [N, T-1, V]
        coverage = self._coverage(ids[:, 1 : 1 + n_fields])
        if coverage is not None:  # the guided distribution is the one sampling draws from
            for pos in range(n_fields, logits.shape[1]):
                logits[:, pos] += coverage.bias
                coverage.step(ids[:, pos + 1], self.vocab.eos)
        logp = logits.log_softmax(-1).gather(2, ids[:, 1:, None]).squeeze(2)
        real = ids[:, 1:] != self.vocab.pad
        text = real.clone()
        text[:, : len(self.codec.fields)] = False
        return logp * real, text

    def log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        """[N] sum of each record's token log-probabilities (nats), structured tokens included."""
        return self._token_log_probs(rows.to_dict("records"))[0].sum(1).numpy()

    def text_log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        """[N] log-probability of each record's text given its structured values (nats)."""
        logp, text = self._token_log_probs(rows.to_dict("records"))
        return (logp * text).sum(1).numpy()

    def perplexity(self, rows: pd.DataFrame) -> float:
        """exp(mean NLL per text token) over ``rows`` (words and EOS; <unk> counts as a token)."""
        logp, text = self._token_log_probs(rows.to_dict("records"))
        return float(math.exp(-(logp * text).sum() / text.sum()))

    # -- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _sample(self, forced: list[list[int | None]], seed: int) -> list[tuple[list[int], bool]]:
        """Per row: structured tokens (``forced`` where not None, else sampled) then text tokens;
        and whether every text field ended. One uniform per row and step from ``seed``."""
        from models.sampling import draw

        s = self.sampling
        temperature, top_k = float(s.get("temperature", 1.0)), int(s.get("top_k") or 0)
        top_p = float(s.get("top_p") or 1.0)
        gen = torch.Generator().manual_seed(seed)
        n, n_fields, n_text = len(forced), len(self.codec.fields), len(self.spec.text)
        token = torch.full((n,), self.vocab.bos, dtype=torch.long)
        out = [[] for _ in range(n)]
        ended = torch.zeros(n, dtype=torch.long)      # text fields finished per row
        words = torch.zeros(n, dtype=torch.long)      # words so far in the current text field
        state, prompt, coverage = None, torch.zeros(n, self.config.embed), None
        prefixes = torch.zeros(n, n_fields, dtype=torch.long)
        for pos in range(n_fields + n_text * (self.config.max_words + 1)):
            if pos:  # the input is a structured token while pos <= n_fields
                prompt = prompt + self.net.embedding(token) if pos <= n_fields else prompt
            if pos == n_fields:
                coverage = self._coverage(prefixes)
            logits, state = self.net(token[:, None], state=state,
                                     prompt=prompt if pos >= n_fields else None)
            u = torch.rand(n, generator=gen, dtype=torch.float64)
            mask = self.field_masks[pos] if pos < n_fields else self.text_mask
            if coverage is not None:
                mask = mask + coverage.bias
            token = draw(logits[:, -1] + mask, u, temperature, top_k, top_p)
            if pos < n_fields:
                fixed = torch.tensor([f[pos] if f[pos] is not None else -1 for f in forced])
                token = torch.where(fixed >= 0, fixed, token)
                prefixes[:, pos] = token
            else:  # training cut texts at max_words and ended them there: so does sampling
                token = torch.where(words >= self.config.max_words, self.vocab.eos, token)
                words = torch.where(token == self.vocab.eos, 0, words + 1)
                if coverage is not None:
                    coverage.step(token, self.vocab.eos)
            live = ended < n_text
            for i in live.nonzero().squeeze(1).tolist():
                out[i].append(int(token[i]))
            ended += (live & (token == self.vocab.eos)).long()
            if pos >= n_fields and not bool((ended < n_text).any()):
                break
        return [(o, bool(e == n_text)) for o, e in zip(out, ended.tolist(), strict=True)]

    def _rows(self, sampled, seed: int, keep: list[dict] | None = None) -> Proposal:
        rng = np.random.default_rng(seed)
        rows, reasons, raw = [], [], []
        n_fields = len(self.codec.fields)
        for k, (ids, finished) in enumerate(sampled):
            row = dict(keep[k]) if keep is not None else {
                f.name: self.codec.decode(i, ids[i], rng) for i, f in enumerate(self.codec.fields)}
            texts, cur = [], []
            for t in ids[n_fields:]:
                if t == self.vocab.eos:
                    texts.append(self.vocab.decode(cur))
                    cur = []
                else:
                    cur.append(t)
            texts += [self.vocab.decode(cur)] if cur else []
            for f, text in zip(self.spec.text, texts + [""] * len(self.spec.text), strict=False):
                row[f.name] = text
            rows.append(row if finished else None)
            reasons.append(None if finished else "unfinished")
            raw.append(None if finished else " | ".join(texts))
        return Proposal(rows, reasons, raw)

    def _propose(self, n: int, seed: int, conditions: Mapping[str, str] | None) -> Proposal:
        fixed = [None] * len(self.codec.fields)
        names = [f.name for f in self.codec.fields]
        for name, value in (conditions or {}).items():
            if name not in names:
                raise ValueError(f"condition on {name!r}: not a structured column of this "
                                 f"model ({', '.join(names)})")
            i = names.index(name)
            f = self.codec.fields[i]
            fixed[i] = self.codec.encode(i, value if f.kind == "categorical" else float(value))
        return self._rows(self._sample([list(fixed) for _ in range(n)], seed), seed)

    def complete(self, rows: list[dict], seed: int) -> list[dict]:
        """``rows`` with their text field(s) sampled given their structured values; a text cut
        off at ``max_words`` is kept as far as it went."""
        sampled = self._sample([self.codec.prefix(r) for r in rows], seed)
        proposal = self._rows([(ids, True) for ids, _ in sampled], seed, keep=rows)
        return proposal.rows

    def check(self, row: dict) -> str | None:
        if any(self.replay.copies(row.get(f.name)) for f in self.spec.text):
            return "replay"
        return None

    # -- files ------------------------------------------------------------------------------------
    def _save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()},
                  str(directory / WEIGHTS))
        if getattr(self, "guidance", None) is not None:
            save_file({"bias": self.guidance.contiguous()}, str(directory / GUIDANCE))
        (directory / VOCAB).write_text(json.dumps({"tokens": self.vocab.tokens}))
        self.replay.save(directory)

    def _load(self, directory: Path) -> None:
        from safetensors.torch import load_file

        self._build_codes(self.spec,
                          Vocabulary(json.loads((directory / VOCAB).read_text())["tokens"]))
        self.net = LSTMLM(self.n_tokens, self.config, dp=False)
        self.net.load_state_dict(load_file(str(directory / WEIGHTS)))
        self.net.eval()
        guided = directory / GUIDANCE
        self.guidance = load_file(str(guided))["bias"] if guided.exists() else None
        self.replay = ReplayIndex.load(directory)
