"""Issue 12: phones, e-mails, cards and IBANs, street addresses, postcodes and driver-licence
numbers the scrubber missed; the residual gate that must catch each kind when the scrubber is
told not to remove it; texts longer than spaCy's max_length."""

import itertools

import pandas as pd
import pytest

from tasks import pii
from tasks.anonymize import AnonymizeConfig, Key, anonymize
from tasks.contract import ColumnSpec, DataContract, Role
from tasks.errors import PrivacyError

KEY = Key(b"k" * 32, "test-key")
PATTERN_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
                    "US_SSN", "URL", "DATE_TIME", "STREET_ADDRESS", "POSTCODE", "DRIVER_LICENSE")


def scrub(text: str, entities=PATTERN_ENTITIES) -> str:
    """The scrubber's patterns alone (no NER model is loaded)."""
    [spans] = pii.find_pii([text], ner_model="unused", entities=entities)
    return pii.replace_spans(text, spans)


@pytest.mark.parametrize(("text", "expected"), [
    # The examples: the extension goes with the number.
    ("call 555-201-7788 x209 after 5", "call <PHONE> after 5"),
    ("office 020 7946 0958 ext. 31, ask for billing", "office <PHONE>, ask for billing"),
    ("desk line 312-555-0143 ext 4", "desk line <PHONE>"),
    ("switchboard (646) 555-0182 #12 then press 1", "switchboard <PHONE> then press 1"),
    ("reception +44 161 496 0733 extension 2210.", "reception <PHONE>."),
    # Short local numbers with a word that says phone; bare 10-digit North American numbers.
    ("call me on 555-0199 tonight", "call me on <PHONE> tonight"),
    ("my number is 555 0147", "my number is <PHONE>"),
    ("4155550129 is the one to ring", "<PHONE> is the one to ring"),
    ("reach the front desk at 2125550187", "reach the front desk at <PHONE>"),
    # Glued to the word before.
    ("tel415-555-0129", "tel<PHONE>"),
    ("mobile07700900777", "mobile<PHONE>"),
    ("whatsapp+4915112345678", "whatsapp<PHONE>"),
    ("ph:0161 496 0018", "ph:<PHONE>"),
    ("Tel.+33 1 42 68 53 00", "Tel.<PHONE>"),
    ("Mob.0612345678 (evenings)", "Mob.<PHONE> (evenings)"),
    # International prefixes written out.
    ("0044 20 7946 0958", "<PHONE>"),
    ("from the US dial 011 44 20 7946 0958", "from the US dial <PHONE>"),
    ("dial 011 49 30 901820 for Berlin", "dial <PHONE> for Berlin"),
])
def test_phone_forms(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "order 1234567890 shipped", "build 10.0.19045 is out", "sales rose 2005-2024 by 4%",
    "ticket INC1234567 closed", "tracking JJD000390007283922194", "we sold 4155 units",
])
def test_numbers_that_are_no_phone_stay(text):
    assert scrub(text) == text


@pytest.mark.parametrize("address", [
    "иван.петров@почтовик.рф", "почта@пример.испытание", "李伟@例子.中国", "info@公司.cn",
    "user@xn--80ak6aa92e.xn--p1ai", "kasimir@studio-kasimir.london",
    "jo@vineyard.wine", "ana.silva@estudio.photography", "x_y@host.museum",
])
def test_internationalized_and_new_gtld_emails(address):
    text = f"write to {address} today"
    assert scrub(text) == "write to <EMAIL> today"
    # The gate uses the same pattern, and it is checksum-grade: generation's filter sees it too.
    assert [s.entity for s in pii.pattern_spans(text)] == ["EMAIL_ADDRESS"]


@pytest.mark.parametrize("text", ["see logo@2x.png", "icons/arrow@3x.svg", "reply @ 5pm"])
def test_file_names_with_an_at_are_no_email(text):
    assert scrub(text) == text


@pytest.mark.parametrize("card", [
    "180012345670001",  # JCB, 15 digits, 1800
    "2131 9876 5430 009",  # JCB, 15 digits, 2131
    "501812345673",  # Maestro, 12 digits
    "6759 1234 5678 9000 008",  # Maestro, 19 digits
    "6304987654000007",  # Maestro (Laser range), 16 digits
    "3528-1234-1200-0009",  # JCB, 16 digits
])
def test_card_issuers_and_lengths(card):
    text = f"paid with {card} yesterday"
    assert scrub(text) == "paid with <CREDIT_CARD> yesterday"
    assert pii.pattern_spans(text)


def test_card_with_a_bad_checksum_stays():
    assert scrub("ref 180012345670002 ok") == "ref 180012345670002 ok"


@pytest.mark.parametrize("iban", [
    "de44 5001 0517 5407 3249 31", "de44500105175407324931", "gb33 bukb 2020 1555 5555 55",
    "Fr14 2004 1010 0505 0001 3M02 606", "NL91 ABNA 0417 1643 00",
])
def test_ibans_in_any_case_and_spacing_are_one_iban(iban):
    # "iban de44 5001 0517 …" was half replaced, as a card.
    assert scrub(f"iban {iban} thanks") == "iban <IBAN> thanks"


@pytest.mark.parametrize(("text", "expected"), [
    ("Ship to 1234 Elm Street, Apt. 5B, Springfield, IL 62704 please",
     "Ship to <ADDRESS> please"),
    ("i live at 42 wallaby way, sydney", "i live at <ADDRESS>, sydney"),
    ("Suite 300, 55 W 34th St, New York, NY 10001", "<ADDRESS>"),
    ("mail it to P.O. Box 1420, Austin, TX 78767", "mail it to <ADDRESS>"),
    ("PSC 1234, Box 5678, APO AA 34001", "<ADDRESS>"),
    ("USS Nimitz, FPO AP 96620", "<ADDRESS>"),
    ("Flat 3, 10 Downing Street, London SW1A 2AA", "<ADDRESS>"),
    ("send it to 221B Baker Street, London NW1 6XE", "send it to <ADDRESS>"),
    ("24 Sussex Drive, Ottawa, ON K1A 0B1", "<ADDRESS>"),
    ("Musterstraße 12, 10115 Berlin", "<ADDRESS>"),
    ("wohne in der Berliner Str. 5a, D-80331 München", "wohne in der <ADDRESS>"),
    ("12 rue de la Paix, 75002 Paris", "<ADDRESS>"),
    ("Keizersgracht 123, 1015 CJ Amsterdam", "<ADDRESS>"),
    ("abito in Via Roma 12, 00184 Roma", "abito in <ADDRESS>"),
    ("Calle de Alcalá, 45, 28014 Madrid", "<ADDRESS>"),
    ("Rua Augusta, 100, 1100-053 Lisboa", "<ADDRESS>"),
    ("ul. Kwiatowa 5, 00-950 Warszawa", "<ADDRESS>"),
    ("Storgatan 4, 114 55 Stockholm", "<ADDRESS>"),
])
def test_street_addresses_in_several_countries_formats(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("postcode SW1A 1AA, near the park", "postcode <POSTCODE>, near the park"),
    ("we moved to K1A 0B1 last year", "we moved to <POSTCODE> last year"),
    ("Austin, TX 78701", "Austin, TX <POSTCODE>"),
    ("zip 94107-1234", "zip <POSTCODE>"),
    ("PLZ: 10115", "PLZ: <POSTCODE>"),
])
def test_postcodes_next_to_an_address_or_labelled(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("DL# D1234567", "DL# <DRIVER_LICENSE>"),
    ("driver's licence no. SMITH801015J99AB", "driver's licence no. <DRIVER_LICENSE>"),
    ("Driver License Number: 123-456-789", "Driver License Number: <DRIVER_LICENSE>"),
    ("driving licence MORGA657054SM9IJ expires 2031",
     "driving licence <DRIVER_LICENSE> expires 2031"),
    ("Führerschein-Nr. B072RRE2I55", "Führerschein-Nr. <DRIVER_LICENSE>"),
])
def test_labelled_driver_licence_numbers(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "I waited 3 days on the road", "give him a ring 5 times", "we have 2 place settings",
    "the 3 main roads were closed", "it costs $12 per month", "DL 2 of 5 finished",
    "shipped 12 units on friday", "room for 4 people at the Grand Hotel",
])
def test_sentences_without_an_address_stay(text):
    assert scrub(text) == text


def _frame(note: str) -> tuple[pd.DataFrame, DataContract]:
    df = pd.DataFrame({"id": ["r1", "r2"], "note": [note, "nothing to see here"]})
    contract = DataContract(columns=(ColumnSpec(name="id", role=Role.ID),
                                     ColumnSpec(name="note", role=Role.TEXT)))
    return df, contract


@pytest.mark.parametrize(("kind", "value"), [
    ("EMAIL_ADDRESS", "kasimir@studio-kasimir.london"),
    ("PHONE_NUMBER", "tel415-555-0129"),
    ("CREDIT_CARD", "213198765430009"),
    ("IBAN_CODE", "de44500105175407324931"),
    ("US_SSN", "SSN 536221234"),
    ("IP_ADDRESS", "203.0.113.77"),
    ("STREET_ADDRESS", "12 rue de la Paix, 75002 Paris"),
    ("POSTCODE", "K1A 0B1"),
    ("DRIVER_LICENSE", "DL# D1234567"),
])
def test_gate_catches_a_kind_the_scrubber_was_told_to_keep(kind, value):
    # Each value is one only its own kind's recognizer finds: with cards switched off, a spaced
    # card number is still removed, as a phone number, and then nothing is left to catch.
    df, contract = _frame(f"left a note: {value} - see you")
    kept = tuple(e for e in pii.GATE_ENTITIES if e != kind)
    cfg = AnonymizeConfig(text_entities=kept, key_file=None, k=1)
    with pytest.raises(PrivacyError, match=rf"note \(1 cells\) with {kind}\b") as err:
        anonymize(df, contract, cfg, KEY)
    assert value not in str(err.value)
    # Scrubbed, the same row passes.
    out, _, report = anonymize(df, contract, cfg.model_copy(update={"text_entities": (
        *kept, kind)}), KEY)
    assert value not in out["note"].iloc[0] and report.residual_identifiers == {}


def test_text_pieces_cover_the_text_with_overlap():
    text = " ".join(f"w{i}" for i in range(3000))
    pieces = pii.text_pieces(text, 1000, overlap=100)
    assert pieces[0][0] == 0 and pieces[-1][0] + len(pieces[-1][1]) == len(text)
    for (a, pa), (b, _) in itertools.pairwise(pieces):
        assert all(len(p) <= 1000 for _, p in pieces)
        assert text[a : a + len(pa)] == pa
        assert a < b <= a + len(pa) - 90  # every 90-character window lies whole in one piece
    assert pii.text_pieces("short", 1000) == [(0, "short")]


def test_text_longer_than_spacy_max_length_is_scrubbed_in_pieces(monkeypatch):
    # A text over spaCy's max_length (error E088 before, and nothing written). The limit is
    # scaled down tenfold (1,000,000 → 100,000 characters, text and pieces with it) so NER
    # reads 120,000 characters instead of 1.2 M; spaCy checks it on every call all the same.
    limit = 100_000
    monkeypatch.setattr(pii.ner_pipeline(AnonymizeConfig().ner_model), "max_length", limit)
    filler = "the parcel went back and forth between depots for a while. "
    chunk = 4_000
    text = filler * (limit * 12 // 10 // len(filler))
    # PII around piece borders: the first cut falls near 4,000.
    plants = {chunk - 5: "call 415-555-0129 x209",
              2 * chunk - 3: "iban de44 5001 0517 5407 3249 31",
              limit + 10: "Greetings from Ottilie Vandersloot, 12 rue de la Paix, 75002 Paris"}
    for at, value in sorted(plants.items(), reverse=True):
        text = text[:at] + " " + value + " " + text[at:]
    assert len(text) > limit
    df = pd.DataFrame({"id": ["long", "short"], "note": [text, "ring 555-201-7788 ext. 31"]})
    contract = DataContract(columns=(ColumnSpec(name="id", role=Role.ID),
                                     ColumnSpec(name="note", role=Role.TEXT)))
    cfg = AnonymizeConfig(key_file=None, k=1, scrub_chunk_chars=chunk)
    out, suppressed, report = anonymize(df, contract, cfg, KEY)
    assert len(out) + len(suppressed) == 2 and len(out) == 2
    long_out = out["note"].iloc[0]
    for value in ("415-555-0129", "x209", "de44", "5001 0517", "rue de la Paix", "75002"):
        assert value not in long_out
    assert "call <PHONE>" in long_out and "iban <IBAN>" in long_out and "<ADDRESS>" in long_out
    assert out["note"].iloc[1] == "ring <PHONE>"
    assert report.residual_identifiers == {}


def test_a_number_with_and_without_its_extension_gets_one_surrogate():
    df, contract = _frame("desk 555-201-7788 x209, or 555-201-7788 after hours")
    cfg = AnonymizeConfig(key_file=None, k=1, text_replacement="surrogate",
                          text_entities=("PHONE_NUMBER",))
    out, _, report = anonymize(df, contract, cfg, KEY)
    note = out["note"].iloc[0]
    assert "7788" not in note and "x209" not in note
    first, second = (note.split("desk ")[1].split(", or ")[0],
                     note.split(", or ")[1].split(" after")[0])
    assert first == second and report.residual_identifiers == {}


def test_generation_filter_gates_free_text_like_the_anonymize_stage():
    from tasks.generate import has_pii

    text = "Deliver to 12 rue de la Paix, 75002 Paris or call tel415-555-0129"
    assert has_pii({"postcode": "SW1A 1AA", "message": text}, text_fields={"message"})
    # A structured value is checked with the checksum-grade patterns only: a postcode column
    # releases postcodes.
    assert not has_pii({"postcode": "SW1A 1AA", "message": "all good"}, text_fields={"message"})
    assert has_pii({"message": "mail иван@почтовик.рф"})
