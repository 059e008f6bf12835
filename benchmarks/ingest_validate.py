"""Ingest + validate of N rows x 12 demo-like columns, against plain pandas doing the same checks.

Generates the CSV with vectorized Arrow string kernels (Faker per row would take minutes),
plants ~1% bad rows, then runs each variant in its own subprocess so that peak memory
(ru_maxrss, imports included) is that variant's alone. Time is the stage itself, imports
excluded. Prints one JSON object.

    python benchmarks/ingest_validate.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

REPO = Path(__file__).resolve().parents[1]
FIRST = ["Anna", "Ben", "Carla", "David", "Elif", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kemal", "Lena", "Mateo", "Nora", "Oscar", "Priya", "Quinn", "Rosa", "Sven", "Tara"]
LAST = ["Smith", "Garcia", "Lee", "Brown", "Khan", "Novak", "Rossi", "Sato", "Weber", "Okafor"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "aol.com", "example.org"]
PRODUCTS = ["Nimbus Phone", "Aurora Laptop", "Pulse Earbuds", "Echo Speaker", "Orbit Tablet"]
CHANNELS = ["email", "phone", "chat", "web_form", "social"]
MESSAGES = [
    "The screen on my device has a dead line across it, right out of the box.",
    "I was charged twice for my order and need one of the payments reversed.",
    "When will my parcel actually be delivered? It has been stuck at the depot for days.",
    "Just wanted to say the setup took less than five minutes, thank you so much.",
]


def _pick(rng: np.random.Generator, options: list[str], n: int) -> pa.Array:
    idx = pa.array(rng.integers(0, len(options), n).astype(np.int32))
    return pa.DictionaryArray.from_arrays(idx, pa.array(options)).dictionary_decode()


def _digits(rng: np.random.Generator, low: int, high: int, n: int, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(rng.integers(low, high, n)), pa.string()), width, "0")


def generate(rows: int, path: Path, seed: int = 7) -> dict:
    """Write the benchmark CSV; return what was planted."""
    rng = np.random.default_rng(seed)
    join = pc.binary_join_element_wise
    first, last = _pick(rng, FIRST, rows), _pick(rng, LAST, rows)
    ids = join("T-", pc.utf8_lpad(pc.cast(pa.array(np.arange(1, rows + 1)), pa.string()), 7,
                                  "0"), "")
    born = pa.array(rng.integers(-9000, 12000, rows).astype("datetime64[D]"))
    created = pa.array(np.datetime64("2025-01-01T00:00:00") + rng.integers(0, 3e7, rows)
                       .astype("timedelta64[s]"))
    table = {
        "ticket_id": ids,
        "customer_id": join("C-", _digits(rng, 10000, 99999, rows, 5), ""),
        "full_name": join(first, last, " "),
        "email": join(pc.utf8_lower(first), ".", pc.utf8_lower(last),
                      _digits(rng, 1, 999, rows, 1), "@", _pick(rng, DOMAINS, rows), ""),
        "phone": join("+1-", _digits(rng, 200, 999, rows, 3), "-", _digits(rng, 0, 9999999,
                                                                           rows, 7), ""),
        "birth_date": pc.cast(born, pa.string()),
        "postcode": _digits(rng, 0, 99999, rows, 5),
        "product": _pick(rng, PRODUCTS, rows),
        "channel": _pick(rng, CHANNELS, rows),
        "rating": _digits(rng, 1, 6, rows, 1),
        "created_at": pc.strftime(created, "%Y-%m-%dT%H:%M:%S"),
        "message": join(_pick(rng, MESSAGES, rows), " Thanks, ", first, ""),
    }
    bad = rng.permutation(rows)[: rows // 100]
    kinds = np.array_split(bad, 4)
    mask = lambda idx: pa.array(np.isin(np.arange(rows), idx))  # noqa: E731
    table["email"] = pc.if_else(mask(kinds[0]), "broken.at.example.com", table["email"])
    table["rating"] = pc.if_else(mask(kinds[1]), "9", table["rating"])
    dupes = np.sort(kinds[2])[1:]  # each repeats the id of an earlier row
    table["ticket_id"] = pc.if_else(mask(dupes), "T-0000001", table["ticket_id"])
    table["message"] = pc.if_else(mask(kinds[3]), pa.scalar(None, pa.string()), table["message"])
    pacsv.write_csv(pa.table(table), path)
    return {"bad_rows_planted": len(bad)}


def contract():
    from flows.config import demo_contract
    from tasks.contract import DataContract

    cols = [c.model_copy(update={"regex": r"^T-\d{7}$"}) if c.name == "ticket_id" else c
            for c in demo_contract().columns if c.name != "city"]
    return DataContract(columns=tuple(cols))


def run_privgen(csv: Path, out: Path) -> dict:
    from tasks.ingest import IngestConfig, ingest
    from tasks.validate import ValidateConfig, check_batch, validate_parquet

    c, cfg = contract(), ValidateConfig()
    started = time.perf_counter()
    result = ingest(IngestConfig(path=csv), out)
    outcome = validate_parquet(Path(result.canonical_path), c, cfg, str(csv), out)
    check_batch(outcome.report, c, cfg, str(csv))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "kept": outcome.report.rows_kept,
            "quarantined": outcome.report.rows_quarantined}


def run_pandas(csv: Path, out: Path) -> dict:
    """The same checks written directly in pandas: read, cast, null, regex, range, set, unique,
    formula; then kept and quarantined rows to Parquet, as the stage writes them."""
    import pandas as pd

    from tasks.contract import DType
    from tasks.ingest import IngestConfig
    from tasks.validate import FORMULA

    c = contract()
    started = time.perf_counter()
    df = pd.read_csv(csv, dtype=str, keep_default_na=False,
                     na_values=list(IngestConfig().missing_values))
    bad = np.zeros(len(df), dtype=bool)
    for spec in c.columns:
        raw = df[spec.name]
        if spec.dtype is DType.INTEGER:
            typed = pd.to_numeric(raw, errors="coerce")
        elif spec.dtype in (DType.DATE, DType.DATETIME):
            typed = pd.to_datetime(raw, errors="coerce", format="ISO8601")
        else:
            typed = raw
        bad |= (raw.notna() & typed.isna()).to_numpy()
        if not spec.nullable:
            bad |= raw.isna().to_numpy()
        if spec.regex:
            bad |= (raw.notna() & ~raw.str.match(spec.regex).fillna(False)).to_numpy(dtype=bool)
        if spec.min is not None or spec.max is not None:
            bad |= ((typed < spec.min) | (typed > spec.max)).fillna(False).to_numpy(dtype=bool)
        if spec.allowed:
            bad |= (raw.notna() & ~raw.isin(spec.allowed)).to_numpy()
        if spec.unique:
            bad |= (raw.notna() & raw.duplicated(keep="first")).to_numpy()
        if spec.dtype is DType.STRING:
            bad |= raw.str.match(FORMULA).fillna(False).to_numpy(dtype=bool)
    df[~bad].to_parquet(out / "kept.parquet", index=False)
    df[bad].to_parquet(out / "quarantine.parquet", index=False)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "kept": int((~bad).sum()), "quarantined": int(bad.sum())}


def _variant(name: str, csv: Path) -> dict:
    import flows.config  # noqa: F401 - both variants pay the same imports before the clock starts
    import tasks.validate  # noqa: F401

    imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as out:
        result = (run_privgen if name == "privgen" else run_pandas)(csv, Path(out))
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["rss_after_imports_mib"] = round(imported)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--variant", choices=["privgen", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(_variant(args.variant, args.csv)))
        return

    with tempfile.TemporaryDirectory(prefix="privgen-bench-") as work:
        csv = Path(work) / "tickets.csv"
        started = time.perf_counter()
        planted = generate(args.rows, csv)
        generated_s = time.perf_counter() - started
        csv_mib = round(csv.stat().st_size / 2**20, 1)
        results = {}
        for name in ("pandas", "privgen"):
            proc = subprocess.run([sys.executable, __file__, "--variant", name, "--csv", str(csv)],
                                  cwd=REPO, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{name} variant failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["rows_per_s"] = round(args.rows / r["seconds"])
            r["seconds"] = round(r["seconds"], 2)
            results[name] = r
    print(json.dumps({
        "benchmark": "ingest_validate",
        "rows": args.rows, "columns": 12, "csv_mib": csv_mib,
        "generate_s": round(generated_s, 1), **planted,
        "pandas": results["pandas"], "privgen": results["privgen"],
        "time_ratio": round(results["privgen"]["seconds"] / results["pandas"]["seconds"], 2),
        "same_rows_quarantined": results["privgen"]["quarantined"] ==
        results["pandas"]["quarantined"],
        "targets": {"time_ratio_max": 3.0, "peak_rss_mib_max": 2048},
        "cpus": os.cpu_count(),
    }, indent=2))


if __name__ == "__main__":
    main()
