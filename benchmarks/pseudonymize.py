"""Keyed pseudonymization throughput: cells per second over a 1,000,000-row frame.

Three identifier columns shaped like real ones: e-mails that are nearly all distinct (written
in mixed case and padding, as people type them), customer ids that repeat (several tickets per
customer) and names drawn from a few thousand combinations. Each column is timed on its own
and all three together (e-mails, all distinct, are the floor: one HMAC per
cell), after one warm-up run. Prints one JSON object.

    python benchmarks/pseudonymize.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd

from tasks.anonymize import Key, pseudonymize

FIRST = ("Ana", "Ben", "Chloé", "Dmitri", "Emeka", "Fatima", "Giulia", "Hiro", "Ines", "Jonas",
         "Kofi", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Yuki")


def frame(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, rows // 4, rows)
    case = rng.integers(0, 3, rows)
    emails = [f"user.{i}@example{i % 997}.com" for i in rng.permutation(rows)]
    emails = [e.upper() if c == 0 else (f" {e} " if c == 1 else e)
              for e, c in zip(emails, case, strict=True)]
    surnames = [f"Surname{n}" for n in range(250)]
    names = [f"{FIRST[a]} {surnames[b]}" for a, b in zip(rng.integers(0, len(FIRST), rows),
                                                         rng.integers(0, 250, rows), strict=True)]
    return pd.DataFrame({
        "email": pd.array(emails, dtype="string"),
        "customer_id": pd.array([f"C-{i:07d}" for i in ids], dtype="string"),
        "full_name": pd.array(names, dtype="string"),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    key = Key(os.urandom(32), "bench")
    df = frame(args.rows)
    pseudonymize(df["email"].head(1000), key, "email")  # warm-up
    out: dict = {"rows": len(df), "cpus": os.cpu_count(),
                 "load_average": round(os.getloadavg()[0], 2), "columns": {}}
    total_cells, total_s = 0, 0.0
    for col in df.columns:
        started = time.perf_counter()
        result = pseudonymize(df[col], key, col)
        elapsed = time.perf_counter() - started
        assert result.notna().all() and result.str.len().eq(21).all()
        out["columns"][col] = {"distinct": int(df[col].nunique()),
                               "seconds": round(elapsed, 2),
                               "cells_per_s": round(len(df) / elapsed)}
        total_cells += len(df)
        total_s += elapsed
    out["cells"] = total_cells
    out["seconds"] = round(total_s, 2)
    out["cells_per_s"] = round(total_cells / total_s)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
