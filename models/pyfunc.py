"""The MLflow pyfunc wrapper: a registered model that samples synthetic records on request.

Input: a frame with one row per request (``n`` records, ``seed``); params: sampling settings.
Output: the records, parsed back into the non-identifying columns of the training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from models import causal_lm
from models import tokenizer as tokenizers
from models.records import RELEASE_FILE, RecordCodec, RecordGrammar
from models.replay import ReplayIndex

ARTIFACT = "model"  # name of the weights folder among the pyfunc's artifacts


@dataclass
class Sample:
    records: pd.DataFrame
    generated: int
    parse_failures: int


class SyntheticRecordsModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.model, self.meta = causal_lm.load(context.artifacts[ARTIFACT])
        self.codec = RecordCodec.from_dict(self.meta["codec"])
        self.tokenizer = tokenizers.for_saved(context.artifacts[ARTIFACT], self.meta)
        self.replay = ReplayIndex.load(context.artifacts[ARTIFACT])
        # The release rules the model was trained under; None for models saved before them.
        rules = Path(context.artifacts[ARTIFACT]) / RELEASE_FILE
        self.release: dict | None = json.loads(rules.read_text()) if rules.is_file() else None

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> tuple[SyntheticRecordsModel, object]:
        """The wrapper loaded from a saved model folder, as MLflow would load it, and the
        context it was loaded with (``predict`` takes it too)."""
        context = type("Context", (), {"artifacts": {ARTIFACT: str(model_dir)}})()
        wrapper = cls()
        wrapper.load_context(context)
        return wrapper, context

    def copies_training_text(self, row: dict) -> bool:
        """Whether any text field of ``row`` repeats a long n-gram of the training text."""
        columns = self.meta.get("replay", {}).get("columns", [])
        return self.replay is not None and any(self.replay.copies(row.get(c)) for c in columns)

    def grammar(self, forms: dict[str, str] | None = None,
                forced: dict[str, str] | None = None) -> RecordGrammar | None:
        """The record layout and the released forms enforced while sampling (``forms``: the
        regex per field, by default the model's own release rules); byte tokenizers only
        (see HFTokenizer)."""
        if not self.tokenizer.byte_level:
            return None
        if forms is None:
            forms = (self.release or {}).get("forms", {})
        return RecordGrammar(self.codec, self.tokenizer.eos_id, self.tokenizer.vocab_size,
                             prompt_length=1, forms=forms, forced=forced)

    def sample(self, n: int, seed: int, *, temperature: float = 1.0, top_k: int = 0,
               top_p: float = 1.0, max_new_tokens: int | None = None, batch_size: int = 128,
               max_attempts: int = 4, keep=lambda row: True,
               on_batch=lambda done, total: None) -> Sample:
        """Draw until ``n`` records parse and pass ``keep``, or ``max_attempts`` rounds end.

        Each round draws the shortfall with its own seed, so a call is deterministic."""
        rows: list[dict] = []
        generated = failures = 0
        max_new_tokens = max_new_tokens or self.meta["model_config"]["block_size"] - 1
        grammar = self.grammar()
        for attempt in range(max_attempts):
            need = n - len(rows)
            if need <= 0:
                break
            for start in range(0, need, batch_size):
                texts = causal_lm.generate(
                    self.model, self.tokenizer, min(batch_size, need - start),
                    seed=(seed * 1000 + attempt) * 100_003 + start,
                    max_new_tokens=max_new_tokens, temperature=temperature,
                    top_k=top_k or None, top_p=top_p, batch_size=batch_size,
                    grammar=grammar,
                )
                generated += len(texts)
                for text in texts:
                    row = self.codec.decode(text)
                    if row is None:
                        failures += 1
                    elif keep(row):
                        rows.append(row)
                on_batch(min(len(rows), n), n)
        return Sample(self.codec.frame(rows[:n]), generated, failures)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        params = params or {}
        frames = []
        for request in model_input.to_dict("records"):
            sample = self.sample(
                int(request["n"]), int(request.get("seed", 0)),
                temperature=float(params.get("temperature", 1.0)),
                top_k=int(params.get("top_k", 0)), top_p=float(params.get("top_p", 1.0)),
                # Served records never repeat training text either; the batch flow also runs
                # the PII scanner, which lives with the anonymize stage, not in the model.
                keep=lambda row: not self.copies_training_text(row),
            )
            frames.append(sample.records)
        return pd.concat(frames, ignore_index=True) if frames else self.codec.frame([])
