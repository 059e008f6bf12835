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
from pydantic import BaseModel, ConfigDict, Field

from models import accounting, dpsgd
from models.base import Budget, FitResult, Generator, Plan, Proposal, TableSpec
from models.lstm_lm import LSTMLM, record_loss
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

    def _network(self, dp: bool) -> LSTMLM:
        cfg = self.config
        return LSTMLM(self.n_tokens, cfg.embed, cfg.hidden, cfg.layers, dp)

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame, spec: TableSpec, budget: Budget, *, seed: int,
            on_progress: Callable[[dict], None] = lambda m: None) -> FitResult:
        """DP-SGD over Poisson batches of rate q = batch_size / N for ``epochs`` · ⌈1/q⌉ steps,
        σ the least noise meeting ``budget`` composed with its prior; without noise or clipping
        when ``budget.enabled`` is false. ValueError if the prior alone reaches the target."""
        started, cfg = time.monotonic(), self.config
        self.spec = spec
        self._build_codes(spec)
        rows = table.to_dict("records")
        data = self._batch(rows)
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = self._network(dp=budget.enabled)
        guidance_events, guidance_params = self._fit_guidance(rows, budget, seed)
        run = dpsgd.privatize(net, torch.optim.Adam(net.parameters(), lr=cfg.lr), len(data),
                              cfg.batch_size, cfg.epochs, budget, gen, prior=guidance_events)
        run.module.train()
        n_fields, per_epoch = len(self.codec.fields), run.steps // cfg.epochs
        step, loss_sum, loss_n, final_loss = 0, 0.0, 0, math.nan
        while step < run.steps:
            for (index,) in run.loader:
                if step >= run.steps:
                    break
                step += 1
                run.optimizer.zero_grad(set_to_none=True)
                if not len(index):  # skipping a step only lowers the privacy cost
                    continue
                batch = data[index]
                batch = batch[:, : int((batch != self.vocab.pad).sum(1).max())]
                loss = record_loss(run.module(batch, n_fields)[0], batch, self.vocab.pad)
                loss.backward()
                run.optimizer.step()
                loss_sum, loss_n = loss_sum + loss.item() * len(batch), loss_n + len(batch)
                if step % per_epoch == 0:
                    on_progress({"epoch": step // per_epoch, "loss": loss_sum / max(loss_n, 1)})
                    final_loss, loss_sum, loss_n = loss_sum / max(loss_n, 1), 0.0, 0
        self.net = net.plain()
        self.replay = ReplayIndex.build((t for f in spec.text for t in table[f.name]),
                                        cfg.replay_n)
        events = [*guidance_events, *run.events()]
        self.fit_result = FitResult(
            epsilon=run.epsilon(budget), delta=budget.delta, accountant=budget.accountant,
            mechanism=("Gaussian keyword histogram (zCDP) + " if guidance_events else "")
            + "DP-SGD (Opacus DPLSTM)" if budget.enabled else "none",
            private=budget.enabled,
            events=events, seconds=time.monotonic() - started, final_loss=final_loss,
            epsilon_check=accounting.epsilon_check(run.prior + run.events(), budget.delta)
            if budget.enabled else None,
            params={"vocabulary": f"public (wordfreq top-{cfg.vocab_k} + released values)"
                    + ("; which words go with which structured value: paid for (Gaussian "
                       "keyword histogram)" if guidance_params.get("guidance_rho") else ""),
                    "vocab_size": self.n_tokens, "sigma": run.sigma, "sample_rate": run.q,
                    "steps": run.steps, "max_grad_norm": budget.max_grad_norm,
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

    def _fit_guidance(self, rows: list[dict], budget: Budget,
                      seed: int) -> tuple[list[dict], dict]:
        """The keyword-guidance table (``self.guidance`` [structured tokens, V], or None) and
        its privacy events: ρ = share · the ρ a zCDP release could spend alone after the
        budget's prior (Gaussian mechanism, models.guidance); exact counts if not private."""
        from models import guidance

        cfg, self.guidance = self.config, None
        if cfg.guidance_share <= 0 or not self.codec.fields:
            return [], {}
        offset = len(self.vocab)
        prefixes = np.array([self.codec.prefix(r) for r in rows], dtype=np.int64) - offset
        texts = [[w for f in self.spec.text
                  for w in self.vocab.encode(r.get(f.name) if isinstance(r.get(f.name), str)
                                             else "")[: cfg.max_words]] for r in rows]
        fields = [range(self.codec.starts[i] - offset, self.codec.starts[i + 1] - offset)
                  for i in range(len(self.codec.fields))]
        rho = self._guidance_rho(budget, list(budget.prior)) if budget.enabled else None
        self.guidance, sigma = guidance.fit(prefixes, texts, fields, self._eligible(),
                                            cfg.guidance_words, rho,
                                            np.random.default_rng(seed))
        return ([accounting.zcdp(rho)] if rho is not None else [],
                {"guidance_rho": rho, "guidance_sigma": sigma,
                 "guidance_words": cfg.guidance_words})

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
    def _sample(self, forced: list[list[int | None]], seed: int) -> list[tuple[list[int], bool]]:
        """Per row: structured tokens (``forced`` where not None, else sampled) then text tokens;
        and whether every text field ended (``LSTMLM.generate``, one uniform per row and step
        from ``seed``, the sampling settings' temperature, top-k and top-p)."""
        from models.sampling import draw

        s = self.sampling
        temperature, top_k = float(s.get("temperature", 1.0)), int(s.get("top_k") or 0)
        top_p = float(s.get("top_p") or 1.0)
        fixed = torch.tensor([[-1 if t is None else t for t in f] for f in forced],
                             dtype=torch.long).reshape(len(forced), len(self.codec.fields))
        return self.net.generate(
            fixed, self.field_masks, self.text_mask, self.vocab.bos, self.vocab.eos,
            len(self.spec.text), self.config.max_words,
            lambda logits, u: draw(logits, u, temperature, top_k, top_p), self._coverage,
            torch.Generator().manual_seed(seed))

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
        self.net = self._network(dp=False)
        self.net.load_state_dict(load_file(str(directory / WEIGHTS)))
        self.net.eval()
        guided = directory / GUIDANCE
        self.guidance = load_file(str(guided))["bias"] if guided.exists() else None
        self.replay = ReplayIndex.load(directory)
