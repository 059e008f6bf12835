"""How a table row becomes one line of text for the language model, and back."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SEP = " | "


@dataclass(frozen=True)
class RecordCodec:
    """Serialize ``fields`` in order as ``name: value`` pairs; the text field goes last so its
    free text may contain anything, including the separator."""

    fields: tuple[str, ...]
    integer_fields: tuple[str, ...] = ()

    def encode(self, row: dict) -> str:
        parts = []
        for name in self.fields:
            value = row.get(name)
            value = "" if value is None or pd.isna(value) else str(value)
            parts.append(f"{name}: {' '.join(value.split())}")
        return SEP.join(parts)

    def decode(self, text: str) -> dict | None:
        """The row a generated line describes, or None if it does not parse."""
        pieces = text.split(SEP, len(self.fields) - 1)
        if len(pieces) != len(self.fields):
            return None
        row: dict = {}
        for name, piece in zip(self.fields, pieces, strict=True):
            key, sep, value = piece.partition(": ")
            if key != name or not sep or not value.strip():
                return None
            row[name] = value.strip()
        for name in self.integer_fields:
            if not row[name].lstrip("-").isdigit():
                return None
            row[name] = int(row[name])
        return row

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        df = pd.DataFrame(rows, columns=list(self.fields))
        for name in self.fields:
            df[name] = df[name].astype("Int64" if name in self.integer_fields else "string")
        return df

    def to_dict(self) -> dict:
        return {"fields": list(self.fields), "integer_fields": list(self.integer_fields)}

    @classmethod
    def from_dict(cls, d: dict) -> RecordCodec:
        return cls(tuple(d["fields"]), tuple(d.get("integer_fields", ())))
