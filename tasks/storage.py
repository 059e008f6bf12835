"""Atomic file writes, record files in the formats privgen writes, and content digests."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.errors import GenerationError

FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
# OWASP: a cell starting with one of these runs as a formula when a spreadsheet opens the CSV.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path`` and rename it into place.

    A reader never sees a half-written file: the rename is atomic on one filesystem.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_text(text: str, path: Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(obj: Any, path: Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def write_jsonl(rows: list[dict], path: Path) -> Path:
    return write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), path)


def output_format(path: Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise GenerationError(f"{path}: unknown output format; use a .parquet, .csv or .jsonl "
                              "file name")
    return fmt


def neutralize_formulas(df: pd.DataFrame) -> pd.DataFrame:
    """Prefix formula-like text cells with a quote so spreadsheets show them as text."""
    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v)
    return out


def write_records(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    """``df`` as a ``fmt`` file; CSV cells that a spreadsheet would run are neutralized."""
    if fmt == "parquet":
        return write_parquet(df, path)
    if fmt == "csv":
        return atomic_write(path, lambda tmp: neutralize_formulas(df).to_csv(tmp, index=False))
    return atomic_write(path, lambda tmp: df.to_json(tmp, orient="records", lines=True))


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def frame_digest(df: pd.DataFrame) -> str:
    """Order-sensitive SHA-256 over a frame's columns and cell values."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).values.tobytes())
    return h.hexdigest()
