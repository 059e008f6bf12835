import hashlib
import os
import stat

import pandas as pd
import pytest

from flows.config import demo_anonymize, demo_contract
from tasks.anonymize import (
    Key,
    anonymize,
    generalize,
    load_key,
    pseudonymize,
)
from tasks.contract import ColumnSpec, DType
from tasks.errors import ConfigError, PrivacyError

KEY = Key(b"k" * 32, "test-key")
OTHER = Key(b"z" * 32, "other-key")


def _rows(**over):
    row = {
        "ticket_id": "T-000001", "customer_id": "C-00001", "full_name": "Harriet Quimby",
        "email": "harriet.quimby@example.org", "phone": "(415) 555-0199",
        "birth_date": "1985-04-02", "postcode": "94110", "city": "San Francisco",
        "product": "Nimbus Phone", "channel": "email", "rating": 2,
        "created_at": "2025-03-04T10:00:00",
        "message": ("Hi, this is Harriet. Call me on 415-555-0199 or write to "
                    "harriet.quimby@example.org. Card 4111 1111 1111 1111 was charged twice; "
                    "refund to IBAN DE89370400440532013000 please. My brother Oswald "
                    "Cobblepot agrees. Order ORD-1234567. Thanks, Harriet Quimby"),
    }
    row.update(over)
    return pd.DataFrame([row])


def test_pseudonyms_are_keyed_not_plain_or_salted_hashes():
    values = pd.Series(["alice@example.com", "bob@example.com"], dtype="string")
    out = pseudonymize(values, KEY, "email")
    for v, p in zip(values, out, strict=True):
        plain = hashlib.sha256(v.encode()).hexdigest()
        salted = hashlib.sha256(b"email" + v.encode()).hexdigest()
        assert p[1:] not in (plain, salted) and p[1:] not in plain and p[1:] not in salted
    assert set(out).isdisjoint(set(pseudonymize(values, OTHER, "email")))


def test_same_person_in_two_formats_gets_one_pseudonym():
    out = pseudonymize(pd.Series(["A@x.com ", "a@x.com", "b@x.com"], dtype="string"), KEY, "e")
    assert out[0] == out[1] != out[2]


def test_generalization_rules():
    dates = pd.Series(["1985-04-02", "1999-12-31"])
    spec = ColumnSpec(name="d", dtype=DType.DATE)
    assert list(generalize(dates, spec, "decade")) == ["1980s", "1990s"]
    assert list(generalize(dates, spec, "year")) == ["1985", "1999"]
    assert list(generalize(pd.Series(["94110"]), ColumnSpec(name="p"), "prefix:3")) == ["941**"]
    assert list(generalize(pd.Series([23, 37]), ColumnSpec(name="n", dtype=DType.INTEGER),
                           "bin:10")) == ["20-29", "30-39"]
    with pytest.raises(ConfigError, match=r"anonymize\.generalize\.p"):
        generalize(pd.Series(["x"]), ColumnSpec(name="p"), "soundex")


def test_text_pii_replaced_and_identifiers_dropped():
    df = _rows()
    out, report = anonymize(df, demo_contract(), demo_anonymize(), KEY)
    assert {"full_name", "email", "phone"}.isdisjoint(out.columns)
    message = out["message"].iloc[0]
    for secret in ("Harriet", "Quimby", "415-555-0199", "harriet.quimby@example.org",
                   "4111 1111 1111 1111", "DE89370400440532013000", "Oswald", "ORD-1234567"):
        assert secret not in message, secret
    assert "<PERSON>" in message and "<EMAIL>" in message and "<PHONE>" in message
    assert out["birth_date"].iloc[0] == "1980s" and out["postcode"].iloc[0] == "941**"
    assert out["created_at"].iloc[0] == "2025-03"
    assert out["ticket_id"].iloc[0].startswith("p") and report.key_id == "test-key"
    assert report.residual_identifiers == {}


def test_residual_gate_fails_on_an_identifier_the_scrubber_cannot_see():
    # Another customer's email planted in a kept category column is never scrubbed there.
    df = pd.concat([_rows(), _rows(ticket_id="T-000002", customer_id="C-00002",
                                   full_name="Zed Zylstra", email="zed@zylstra.example",
                                   phone="212-555-0100", city="zed@zylstra.example",
                                   message="ok")], ignore_index=True)
    with pytest.raises(PrivacyError, match=r"city \(1 cells\)") as err:
        anonymize(df, demo_contract(), demo_anonymize(), KEY)
    assert "zylstra" not in str(err.value).lower()


def test_local_key_file_is_created_private(tmp_path, monkeypatch):
    monkeypatch.delenv("PRIVGEN_PSEUDONYM_KEY", raising=False)
    key = load_key(tmp_path / "k" / "pseudonym.key")
    mode = stat.S_IMODE(os.stat(tmp_path / "k" / "pseudonym.key").st_mode)
    assert mode == 0o600 and key.created_at is not None
    assert load_key(tmp_path / "k" / "pseudonym.key").secret == key.secret


def test_missing_key_without_key_file_is_an_error(monkeypatch):
    monkeypatch.delenv("PRIVGEN_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PrivacyError, match="PRIVGEN_PSEUDONYM_KEY"):
        load_key(None)
