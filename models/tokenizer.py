"""A byte-level tokenizer: fixed vocabulary, so nothing about the private data leaks into it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ByteTokenizer:
    """Token ids 0–255 are bytes of UTF-8; three specials follow."""

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
