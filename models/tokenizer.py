"""Tokenizers behind one small interface: privgen's byte tokenizer for models built from a config,
or a pretrained model's own tokenizer (``save_pretrained`` layout or hub name) for fine-tuning."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

# privgen's metadata file in a saved model folder (also written by models.causal_lm.save).
META_FILE = "privgen.json"


@dataclass(frozen=True)
class ByteTokenizer:
    """Token ids 0–255 are bytes of UTF-8; three specials follow. A fixed vocabulary, so nothing
    about the private data leaks into it, and the record grammar can constrain every byte."""

    byte_level: ClassVar[bool] = True
    bos_id: int = 256
    eos_id: int = 257
    pad_id: int = 258

    @property
    def vocab_size(self) -> int:
        return 259

    def encode(self, text: str, max_length: int) -> list[int]:
        """BOS + bytes + EOS, truncated to ``max_length`` (the EOS is kept)."""
        body = list(text.encode("utf-8"))[: max_length - 2]
        return [self.bos_id, *body, self.eos_id]

    def decode(self, ids: list[int]) -> str:
        """Bytes up to the first EOS; a multi-byte character cut by truncation is dropped."""
        out = bytearray()
        for i in ids:
            if i == self.eos_id:
                break
            if i < 256:
                out.append(i)
        return out.decode("utf-8", errors="ignore")

    def save(self, directory: Path) -> None:
        """Nothing to write: the vocabulary is fixed."""


class HFTokenizer:
    """A pretrained model's own tokenizer, used as it was trained (never refit on private data).

    Its subword vocabulary is not byte-aligned, so the record grammar cannot constrain it:
    generated lines that do not parse are quarantined by the generation stage instead."""

    byte_level: ClassVar[bool] = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the pretrained tokenizer has no end-of-sequence token")
        self.eos_id = eos
        self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
        # Padding is masked out of the loss, so reusing EOS (GPT-2 has no pad token) is safe.
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    @classmethod
    def load(cls, name_or_path: str | Path) -> HFTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(name_or_path)))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str, max_length: int) -> list[int]:
        body = self.tokenizer(text, add_special_tokens=False)["input_ids"][: max_length - 2]
        return [self.bos_id, *body, self.eos_id]

    def decode(self, ids: list[int]) -> str:
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))


Tokenizer = ByteTokenizer | HFTokenizer


def for_pretrained(name_or_path: str | None) -> Tokenizer:
    """The tokenizer a model trains with: bytes for a model built from a config or fine-tuned
    from an earlier privgen model, else the pretrained model's own."""
    if name_or_path is None:
        return ByteTokenizer()
    meta = Path(name_or_path) / META_FILE
    if meta.is_file() and json.loads(meta.read_text()).get("tokenizer", "bytes") == "bytes":
        return ByteTokenizer()
    return HFTokenizer.load(name_or_path)


def for_saved(directory: Path, meta: dict) -> Tokenizer:
    """The tokenizer a saved privgen model was trained with."""
    if meta.get("tokenizer", "bytes") == "bytes":
        return ByteTokenizer()
    return HFTokenizer.load(directory)
