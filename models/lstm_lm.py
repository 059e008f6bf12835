"""The network and loss of the ``dplstm`` family: a word-level LSTM language model conditioned on a
record's structured tokens, as pytorch/examples' word_language_model (embedding → LSTM → linear
head), with Opacus' ``DPLSTM`` layer in place of ``nn.LSTM`` when it is trained under DP-SGD."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class LSTMLM(nn.Module):
    """Embedding → LSTM → linear head, with the record's structured tokens (its prompt) added to
    the input of every text position: a conditional LM, so each word sees the values directly
    rather than through a state that DP-SGD's few noisy steps barely train to keep them.
    ``dp``: Opacus' DPLSTM, whose per-sample gradients Opacus computes (its state dict has
    ``nn.LSTM``'s names, so the fast layer samples afterwards: ``plain``)."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dp: bool):
        super().__init__()
        from opacus.layers import DPLSTM

        self.sizes = (vocab, embed, hidden, layers)
        self.embedding = nn.Embedding(vocab, embed)
        lstm = DPLSTM if dp else nn.LSTM
        self.lstm = lstm(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

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

    @torch.no_grad()
    def generate(self, forced: torch.Tensor, field_masks: Sequence[torch.Tensor],
                 text_mask: torch.Tensor, bos: int, eos: int, n_text: int, max_words: int,
                 pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 coverage: Callable[[torch.Tensor], object | None],
                 gen: torch.Generator) -> list[tuple[list[int], bool]]:
        """Sample B records after BOS: F structured tokens (``forced`` [B, F] where ≥ 0, else
        drawn under ``field_masks[f]`` [V], 0 or −inf), then ``n_text`` texts of at most
        ``max_words`` words under ``text_mask`` [V], each ended by ``eos``. ``pick(logits
        [B, V], u [B]) → [B]`` draws with one uniform per row and step from ``gen``;
        ``coverage(prefixes [B, F])`` gives the guidance bias (``models.guidance.Coverage``) or
        None. Per row: its tokens after BOS and whether every text ended."""
        n, n_fields = forced.shape
        token = torch.full((n,), bos, dtype=torch.long)
        out = [[] for _ in range(n)]
        ended = torch.zeros(n, dtype=torch.long)      # texts finished per row
        words = torch.zeros(n, dtype=torch.long)      # words so far in the current text
        state, prompt, bias = None, torch.zeros(n, self.sizes[1]), None
        prefixes = torch.zeros(n, n_fields, dtype=torch.long)
        for pos in range(n_fields + n_text * (max_words + 1)):
            if pos:  # the input is a structured token while pos <= n_fields
                prompt = prompt + self.embedding(token) if pos <= n_fields else prompt
            if pos == n_fields:
                bias = coverage(prefixes)
            logits, state = self(token[:, None], state=state,
                                 prompt=prompt if pos >= n_fields else None)
            u = torch.rand(n, generator=gen, dtype=torch.float64)
            mask = field_masks[pos] if pos < n_fields else text_mask
            token = pick(logits[:, -1] + mask + (bias.bias if bias is not None else 0.0), u)
            if pos < n_fields:
                token = torch.where(forced[:, pos] >= 0, forced[:, pos], token)
                prefixes[:, pos] = token
            else:  # training cut texts at max_words and ended them there: so does sampling
                token = torch.where(words >= max_words, eos, token)
                words = torch.where(token == eos, 0, words + 1)
                if bias is not None:
                    bias.step(token, eos)
            live = ended < n_text
            for i in live.nonzero().squeeze(1).tolist():
                out[i].append(int(token[i]))
            ended += (live & (token == eos)).long()
            if pos >= n_fields and not bool((ended < n_text).any()):
                break
        return [(o, bool(e == n_text)) for o, e in zip(out, ended.tolist(), strict=True)]

    def plain(self) -> LSTMLM:
        """The same weights under ``nn.LSTM`` (fused, for sampling step by step), in eval mode;
        copied layer by layer, as DPLSTM renames its keys only when it is the root."""
        out = LSTMLM(*self.sizes, dp=False)
        for name in ("embedding", "lstm", "head"):
            getattr(out, name).load_state_dict(getattr(self, name).state_dict())
        return out.eval()


def record_loss(logits: torch.Tensor, ids: torch.Tensor, pad: int) -> torch.Tensor:
    """Mean over the batch of each record's mean next-token NLL (nats), so a record's gradient
    has the same scale whatever its length (clipping then bounds each record alike).
    ``logits`` [B, T, V], ``ids`` [B, T]."""
    target = ids[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none",
                          ignore_index=pad)                                  # [B, T-1]
    return (nll.sum(1) / (target != pad).sum(1).clamp(min=1)).mean()
