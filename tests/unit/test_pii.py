from tasks import pii


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
