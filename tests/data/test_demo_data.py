"""Checks that the committed demo data matches its generator and its planted-PII ground truth."""

from __future__ import annotations

import collections
import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATOR_PATH = REPO_ROOT / "data" / "generate_demo.py"
DEMO_DIR = REPO_ROOT / "data" / "demo"
CSV_PATH = DEMO_DIR / "tickets.csv"
PII_PATH = DEMO_DIR / "planted_pii.json"

EMAIL_RE = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+$")


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_demo", GENERATOR_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _load_generator()


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return pd.read_csv(CSV_PATH, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def planted() -> dict:
    return json.loads(PII_PATH.read_text(encoding="utf-8"))


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def test_committed_files_match_fresh_generation(gen, tmp_path):
    import faker

    gen.write(*gen.generate(), tmp_path)
    hint = (
        "committed demo data is stale: run `python data/generate_demo.py` "
        f"(output depends on the Faker version; installed {faker.VERSION})"
    )
    assert (tmp_path / "tickets.csv").read_bytes() == CSV_PATH.read_bytes(), hint
    assert (tmp_path / "planted_pii.json").read_bytes() == PII_PATH.read_bytes(), hint


def test_generation_depends_on_seed(gen):
    a, _ = gen.generate(n_rows=30, seed=1)
    b, _ = gen.generate(n_rows=30, seed=1)
    c, _ = gen.generate(n_rows=30, seed=2)
    assert gen.to_csv_text(a) == gen.to_csv_text(b)
    assert gen.to_csv_text(a) != gen.to_csv_text(c)


def test_shape_and_formats(gen, df, planted):
    assert list(df.columns) == gen.COLUMNS
    assert len(df) == 3000
    assert CSV_PATH.stat().st_size < 2_000_000

    assert df.ticket_id.str.fullmatch(r"T-\d{6}").all()
    assert df.customer_id.str.fullmatch(r"C-\d{5}").all()
    assert df.postcode.str.fullmatch(r"\d{5}").all()
    assert df.postcode.str.startswith("0").any(), "leading-zero ZIPs must survive as strings"
    phone_re = r"\(\d{3}\) \d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\+1-\d{3}-\d{3}-\d{4}"
    assert df.phone.str.fullmatch(phone_re).all()
    assert df.created_at.str.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}").all()
    created = pd.to_datetime(df.created_at, format="%Y-%m-%dT%H:%M:%S")
    assert created.min() >= pd.Timestamp("2025-01-01")
    assert created.max() <= pd.Timestamp("2026-10-31T23:59:59")
    birth = pd.to_datetime(df.birth_date, format="%Y-%m-%d")
    assert (2026 - birth.dt.year).between(18, 85).all()

    bad = {b["row"] for b in planted["bad_rows"]}
    clean = df.drop(index=sorted(bad))
    assert clean.rating.astype(int).between(1, 5).all()
    assert set(clean["product"]) == {p for p, _ in gen.PRODUCTS}
    assert set(df.channel) == {c for c, _ in gen.CHANNELS}
    lengths = clean.message.str.len()
    assert lengths.min() >= 80 and lengths.max() <= 400

    typed = pd.read_csv(CSV_PATH, dtype={"ticket_id": str, "customer_id": str, "postcode": str})
    assert typed.rating.dtype.kind == "i"
    assert typed.postcode.str.len().eq(5).all()


def test_customers_are_consistent(gen, df):
    assert 1800 <= df.customer_id.nunique() <= 2200
    assert (df.customer_id.value_counts() > 1).sum() > 300
    fixed = ["full_name", "phone", "birth_date", "postcode", "city"]
    per_customer = df.groupby("customer_id")[fixed].nunique()
    assert (per_customer == 1).all().all()
    prefix = {city: zip3 for city, zip3, _, _ in gen.CITIES}
    assert (df.postcode.str[:3] == df.city.map(prefix)).all()


def test_bad_rows_are_planted_and_only_those(gen, df, planted):
    bad_rows = planted["bad_rows"]
    assert 0.015 <= len(bad_rows) / len(df) <= 0.025
    kinds = collections.Counter(b["kind"] for b in bad_rows)
    assert set(kinds) == set(gen.BAD_KINDS)
    assert len({b["row"] for b in bad_rows}) == len(bad_rows)

    for b in bad_rows:
        row = df.iloc[b["row"]]
        kind = b["kind"]
        if kind.startswith("missing_"):
            assert row[kind.removeprefix("missing_")] == ""
        elif kind == "malformed_email":
            assert row.email and not EMAIL_RE.match(row.email)
        elif kind == "rating_out_of_range":
            assert not 1 <= int(row.rating) <= 5
        elif kind == "duplicate_ticket_id":
            assert b["duplicate_of"] < b["row"]
            assert row.ticket_id == df.iloc[b["duplicate_of"]].ticket_id

    # Everything not listed must be clean, so the list is a complete answer key.
    bad_idx = {b["row"] for b in bad_rows}
    clean = df.drop(index=sorted(bad_idx))
    assert clean.email.str.match(EMAIL_RE).all()
    assert (clean != "").all().all()
    assert clean.rating.astype(int).between(1, 5).all()
    dup_rows = {b["row"] for b in bad_rows if b["kind"] == "duplicate_ticket_id"}
    assert set(df.index[df.ticket_id.duplicated()]) == dup_rows


def test_every_planted_value_occurs_in_csv(gen, planted):
    text = CSV_PATH.read_text(encoding="utf-8")
    assert set(planted) == set(gen.PII_KEYS) | {"bad_rows"}
    for key in gen.PII_KEYS:
        values = planted[key]
        assert values, key
        assert values == sorted(set(values)), f"{key} must be sorted and deduplicated"
        missing = [v for v in values if v not in text]
        assert not missing, f"{key}: {missing[:5]}"

    assert all(re.fullmatch(r"ORD-\d{7}", o) for o in planted["order_numbers"])
    assert all(c.isdigit() and 13 <= len(c) <= 19 and _luhn_ok(c) for c in planted["card_numbers"])
    assert all(re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", i) for i in planted["ibans"])
    assert all(EMAIL_RE.match(e) for e in planted["emails"])
    assert not set(planted["other_person_names"]) & set(planted["full_names"])


def test_messages_mention_own_pii(df, planted):
    rows = df[df.message != ""]
    n = len(rows)

    def share(pred) -> float:
        return sum(bool(pred(r)) for r in rows.itertuples()) / n

    name = share(lambda r: re.search(rf"\b{re.escape(r.full_name.split()[0])}\b", r.message))
    email = share(lambda r: r.email and r.email in r.message)
    phone = share(lambda r: _digits(r.phone)[-10:] in _digits(r.message))
    order = share(lambda r: re.search(r"ORD-\d{7}", r.message))
    assert name >= 0.5
    assert email >= 0.15
    assert phone >= 0.15
    assert 0.3 <= order <= 0.5

    # Reformatted phone numbers must be present too, not just the column form.
    reformatted = share(
        lambda r: _digits(r.phone)[-10:] in _digits(r.message) and r.phone not in r.message
    )
    assert reformatted > 0.02

    for key in ("card_numbers", "ibans", "other_person_names"):
        values = planted[key]
        frac = share(lambda r, values=values: any(v in r.message for v in values))
        assert 0.04 <= frac <= 0.12, (key, frac)
