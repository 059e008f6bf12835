import hashlib
import os
import re
import stat

import pandas as pd
import pytest

from flows.config import demo_anonymize, demo_contract
from tasks.anonymize import (
    AnonymizationReport,
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


VALUES = ["alice@example.com", "bob@example.com", "C-00001", "Harriet Quimby", "4155550199"]


def _hashes(value: str, column: str) -> set[str]:
    """Plain and salted SHA-256 digests an attacker would enumerate: salts are the column, the
    key itself (a keyed hash done wrong) and a fixed string, before and after the value."""
    forms = {value, value.casefold(), value.strip().casefold()}
    salts = [column.encode(), KEY.secret, b"privgen", f"{column}\x1f".encode()]
    out = set()
    for form in forms:
        out.add(hashlib.sha256(form.encode()).hexdigest())
        for salt in salts:
            out.add(hashlib.sha256(salt + form.encode()).hexdigest())
            out.add(hashlib.sha256(form.encode() + salt).hexdigest())
    return out


def test_no_pseudonym_is_a_plain_or_salted_sha256_of_its_input():
    out = pseudonymize(pd.Series(VALUES, dtype="string"), KEY, "email")
    for value, p in zip(VALUES, out, strict=True):
        digest = p[1:]
        assert not any(h.startswith(digest) or digest in h for h in _hashes(value, "email"))


def test_a_different_key_gives_disjoint_pseudonyms():
    values = pd.Series(VALUES * 2, dtype="string")
    assert set(pseudonymize(values, KEY, "e")).isdisjoint(set(pseudonymize(values, OTHER, "e")))


def test_same_person_in_two_formats_gets_one_pseudonym():
    values = ["A@x.com ", "a@x.com", " Jane  DOE", "jane doe", "ｊａｎｅ ｄｏｅ", "b@x.com"]
    out = pseudonymize(pd.Series(values, dtype="string"), KEY, "e")
    assert out[0] == out[1] and out[2] == out[3] == out[4]
    assert len({out[0], out[2], out[5]}) == 3
    # The column is mixed in: the same value in two columns does not link them.
    assert pseudonymize(pd.Series(["a@x.com"]), KEY, "other")[0] != out[1]


def test_generalization_rules():
    dates = pd.Series(["1985-04-02", "1999-12-31"])
    spec = ColumnSpec(name="d", dtype=DType.DATE)
    assert list(generalize(dates, spec, "decade")) == ["1980s", "1990s"]
    assert list(generalize(dates, spec, "year")) == ["1985", "1999"]
    assert list(generalize(pd.Series(["94110"]), ColumnSpec(name="p", regex=r"^\d{5}$"),
                           "prefix:3")) == ["941**"]
    assert list(generalize(pd.Series([23, 37]), ColumnSpec(name="n", dtype=DType.INTEGER),
                           "bin:10")) == ["20-29", "30-39"]
    with pytest.raises(ConfigError, match=r"anonymize\.generalize\.p"):
        generalize(pd.Series(["x"]), ColumnSpec(name="p"), "soundex")


def test_text_pii_replaced_and_identifiers_dropped():
    df = _rows()
    out, suppressed, report = anonymize(df, demo_contract(), demo_anonymize().model_copy(
        update={"k": 1}), KEY)
    assert suppressed.empty and report.rows_suppressed == 0
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


def _surrogate_run(key: Key) -> tuple[list[str], AnonymizationReport]:
    df = pd.concat([_rows(), _rows(ticket_id="T-000002", message=(
        "harriet again: mail HARRIET.QUIMBY@example.org or call 4155550199. Quimby"))],
        ignore_index=True)
    cfg = demo_anonymize().model_copy(update={"k": 1, "text_replacement": "surrogate"})
    out, _, report = anonymize(df, demo_contract(), cfg, key)
    return list(out["message"]), report


def test_surrogates_are_consistent_reserved_fakes_that_pass_the_gate():
    (first, second), report = _surrogate_run(KEY)
    for secret in ("Harriet", "harriet", "Quimby", "415-555-0199", "4155550199", "Oswald"):
        assert secret not in first and secret not in second, secret
    assert not re.search(r"<(PERSON|EMAIL|PHONE)>", first + second)
    assert "<CREDIT_CARD>" in first and "<IBAN>" in first  # no surrogate for these
    # One person, one surrogate, in every form and row: full name, given name alone, lower case,
    # the e-mail in capitals, the phone without separators.
    given, family = re.search(r"Thanks, (\w+) (\w+)$", first).groups()
    assert first.startswith(f"Hi, this is {given}.") and second.startswith(f"{given.lower()} again")
    assert second.endswith(f". {family}")
    emails = re.findall(r"[\w.+-]+@[\w.-]+\w", first + " " + second)
    phones = re.findall(r"\(\d{3}\) 555-01\d\d", first + " " + second)
    assert len(emails) == 2 and len(set(emails)) == 1
    assert emails[0].endswith(("@example.com", "@example.org", "@example.net"))
    assert len(phones) == 2 and len(set(phones)) == 1
    assert report.residual_identifiers == {}
    # Keyed: another key draws other people; the same key draws the same ones again.
    assert _surrogate_run(OTHER)[0] != [first, second]
    assert _surrogate_run(KEY)[0] == [first, second]


def test_surrogate_gate_still_catches_an_unscrubbed_email():
    df = pd.concat([_rows(), _rows(ticket_id="T-000002", customer_id="C-00002",
                                   full_name="Zed Zylstra", email="zed@zylstra.example",
                                   phone="212-555-0100", city="zed@zylstra.example",
                                   message="ok")], ignore_index=True)
    cfg = demo_anonymize().model_copy(update={"text_replacement": "surrogate"})
    with pytest.raises(PrivacyError, match=r"city \(1 cells\)"):
        anonymize(df, demo_contract(), cfg, KEY)
