"""Labeled phones, e-mail addresses, cards, IBANs, street addresses, postcodes and driver-licence
numbers in the forms issue 12 found missed, and clean texts full of numbers that are none of them.

Drawn by benchmarks/pii_textgen.py's ``generate`` beside its own texts. Unlike the unit tests'
examples: phone extensions, glued labels and dialling prefixes in other spellings; e-mail
addresses in Cyrillic, Chinese, Greek and German IDNs, their punycode, and city, trade and
hobby gTLDs; Luhn-valid JCB 15 and Maestro 12–19 numbers from random digits; Faker's IBANs of
twelve countries in lower, mixed and grouped case; Faker's street addresses of fifteen locales
with the postcode and city each country writes; labelled licence numbers in several states'
and countries' formats.

    python benchmarks/pii_textgen_patterns.py --n 600
"""

from __future__ import annotations

import argparse
import json
import random
import string

import phonenumbers
from faker import Faker
from seeded_fakers import seeded_fakers

SEED = 2323
STREET = "STREET_ADDRESS"

TEMPLATES = (
    # phones
    "pls call {phone_ext} and ask for the warehouse desk",
    "Our office line is {phone_ext}, Monday to Friday.",
    "contact: {glued_phone}",
    "{glued_phone} (after 6pm only)",
    "From abroad dial {intl_prefix_phone}.",
    "my cousin in London is on {intl_prefix_phone}",
    "text me at {local_phone} when you get here",
    "new landline {local_phone}, old one is disconnected",
    "{bare_phone} - that's my cell, call anytime",
    "Callback requested: {bare_phone}",
    # e-mails
    "Reply to {idn_email} with the signed form.",
    "her address is {idn_email}",
    "Newsletter signup: {gtld_email}",
    "cc {gtld_email} and {idn_email} on the thread",
    # cards and IBANs
    "Refund went to card {new_card}.",
    "card no {new_card} exp 09/27",
    "pls send the money to {iban_any}, thanks!",
    "Account: {iban_any} (savings)",
    # addresses and postcodes
    "Deliver to {address} before noon.",
    "new address: {address}",
    "We moved! Find us at {address}",
    "Ship the replacement to {address}, ring twice",
    "the invoice still shows {address} which is wrong",
    "Mailing address {po_box}",
    "Send care packages to {military}",
    "{postcode_labelled}, near the station",
    "Is {postcode_shape} covered by your courier?",
    # driver licences
    "Verified ID with {licence}.",
    "{licence}, issued 2019",
    # clean: numbers that are no personal data
    "{clean}",
    "{clean}",
    "{clean}",
)

CLEAN = (
    "Top 10 Street Food Spots in the old town, ranked by our readers.",
    "The 3 main roads into town were closed after the storm.",
    "Chapter 11 covers Section 5 Part 2 of the agreement.",
    "We waited 45 minutes at Gate 12 before boarding.",
    "Season 2 Episode 7 was the best one yet.",
    "Spring 2024 collection drops on Friday at 10:00.",
    "The 405 Freeway was jammed for 2 hours.",
    "Room 101 on level 3 is booked for the workshop.",
    "Version 4.2.1 fixes the crash on Android 14.",
    "Order #40213 shipped in 2 boxes; weight 3.4 kg.",
    "Gross margin rose 12 Points to 38% in Q3.",
    "We sold 1,250 units at 19.99 each.",
    "Call of Duty 4 Modern Warfare is on sale.",
    "Meeting moved to 3 pm in the Blue Room.",
    "Firmware 10.0.19045.3693 is the latest build.",
    "The bus to Terminal 5 leaves every 15 minutes.",
    "Add 2 cups of flour and 1 tsp of salt.",
    "Highway 1 Road Trip: 7 Days Along the Coast",
    "5 Simple Ways To Save On Groceries",
    "iPhone 15 Pro Max 256 GB, barely used",
    "Invoice 2024-0117 was paid on time.",
    "Temperature hit 38 degrees on 14 July.",
    "Score was 3-1 at half time, 4-2 at the end.",
    "Pages 112-118 explain the method.",
    "Reference code AB12 CD34 is not valid.",
    "Kindle Paperwhite 11th Gen review: 4.5 Stars",
    "We need 3 spare keys for the new office.",
    "Platform 9 3/4 is a fiction, platform 9 is real.",
    "The kids walked 2 miles down the road to school.",
    "Tickets for Row 12 Seat 4 are still available.",
)

# Words before a glued phone number, in the spellings people type.
GLUED = ("tel", "Tel:", "TEL.", "ph", "Ph.", "phone:", "mobile", "Mob:", "mob.", "cell",
         "cell:", "whatsapp", "WhatsApp:", "fax:", "Telefon:", "tlf.")
EXTENSIONS = (" x{}", "x{}", " ext.{}", " Ext: {}", " extension {}", " #{}", ", ext {}",
              " EXT {}")
IDN_EMAILS = (
    ("ru_RU", ("рф", "рус", "москва"), ("почта", "компания", "магазин", "почтовик")),
    ("zh_CN", ("中国", "公司", "网络"), ("例子", "邮件", "公司")),
    ("el_GR", ("ελ",), ("παράδειγμα", "ταχυδρομείο")),
    ("de_DE", ("de", "at"), ("bäckerei-schön", "müller-söhne", "grüße")),
)
NEW_GTLDS = ("london", "berlin", "tokyo", "nyc", "paris", "studio", "agency", "photography",
             "travel", "blog", "design", "email", "wine", "law", "dental", "coffee", "garden",
             "museum", "xyz", "solutions", "consulting", "family", "team", "earth")
IBAN_LOCALES = ("de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT", "en_GB", "pl_PL", "pt_PT",
                "fi_FI", "nl_BE", "de_AT", "de_CH")
# (locale, how a postcode and city follow the street: {street}, {postcode}, {city}, {state}).
ADDRESS_LOCALES = (
    ("en_US", "{street}, {city}, {state} {postcode}"), ("en_US", "{street} {city} {state}"),
    ("en_GB", "{street}, {city} {postcode}"), ("en_CA", "{street}, {city}, {state} {postcode}"),
    ("en_AU", "{street}, {city} {state} {postcode}"), ("en_IE", "{street}, {city}"),
    ("de_DE", "{street}, {postcode} {city}"), ("de_AT", "{street}, {postcode} {city}"),
    ("de_CH", "{street}, {postcode} {city}"), ("fr_FR", "{street}, {postcode} {city}"),
    ("nl_NL", "{street}, {postcode} {city}"), ("it_IT", "{street}, {postcode} {city}"),
    ("es_ES", "{street}, {postcode} {city}"), ("pt_PT", "{street}, {postcode} {city}"),
    ("pl_PL", "{street}, {postcode} {city}"), ("sv_SE", "{street}, {postcode} {city}"),
    ("da_DK", "{street}, {postcode} {city}"), ("no_NO", "{street}, {postcode} {city}"),
)


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (1 if i % 2 else 2)
        total += n - 9 if n > 9 else n
    return body + str((10 - total % 10) % 10)


def _city(fake: Faker) -> str:
    # Faker's it_IT city list is built from a set: its order, and so the city a seed draws,
    # changes with each process's hash seed (see pii_textgen.Filler.city).
    for provider in fake.providers:
        if type(provider).__module__ == "faker.providers.address.it_IT":
            return fake.random_element(sorted(provider.cities))
    return fake.city()


class PatternFiller:
    """Values for one text's slots; each returns a list of (text, entity or None) pieces."""

    def __init__(self, rng: random.Random, fakers: dict[str, Faker]) -> None:
        self.rng, self.fakers = rng, fakers

    def _nanp(self) -> str:
        while True:
            number = f"{self.rng.randint(201, 989)}{self.rng.randint(200, 999)}" \
                     f"{self.rng.randint(0, 9999):04d}"
            if phonenumbers.is_valid_number(phonenumbers.parse(number, "US")):
                return number

    def _national(self) -> str:
        r = self.rng
        n = self._nanp()
        return r.choice((f"{n[:3]}-{n[3:6]}-{n[6:]}", f"({n[:3]}) {n[3:6]}-{n[6:]}",
                         f"{n[:3]}.{n[3:6]}.{n[6:]}", f"020 7946 {r.randint(0, 9999):04d}",
                         f"07{r.randint(100, 999)} {r.randint(100000, 999999)}",
                         f"030 {r.randint(1000000, 9999999)}"))

    def phone_ext(self) -> list:
        return [(self._national() + self.rng.choice(EXTENSIONS).format(self.rng.randint(1, 9999)),
                 "PHONE_NUMBER")]

    def glued_phone(self) -> list:
        r = self.rng
        number = r.choice((self._national().replace(" ", ""), "+" + self._intl_digits(),
                           self._nanp()))
        return [(r.choice(GLUED), None), (number, "PHONE_NUMBER")]

    def _intl_digits(self) -> str:
        region = self.rng.choice(("GB", "DE", "FR", "ES", "IT", "NL", "IE", "AU", "JP", "BR",
                                  "IN", "ZA", "MX", "SE", "PL"))
        example = phonenumbers.example_number_for_type(region,
                                                       phonenumbers.PhoneNumberType.MOBILE)
        national = str(example.national_number)
        keep = max(2, len(national) - 4)
        return f"{example.country_code}{national[:keep]}" + "".join(
            self.rng.choice(string.digits) for _ in national[keep:])

    def intl_prefix_phone(self) -> list:
        r = self.rng
        digits = self._intl_digits()
        number = phonenumbers.parse("+" + digits)
        formatted = phonenumbers.format_number(
            number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)[1:]
        prefix = r.choice(("00", "00", "011 ", "00 "))
        return [(prefix + (formatted if r.random() < 0.7 else digits), "PHONE_NUMBER")]

    def local_phone(self) -> list:
        r = self.rng
        return [(r.choice((f"{r.randint(200, 999)}-{r.randint(0, 9999):04d}",
                           f"{r.randint(200, 999)} {r.randint(0, 9999):04d}")), "PHONE_NUMBER")]

    def bare_phone(self) -> list:
        n = self._nanp()
        return [(n if self.rng.random() < 0.8 else "1" + n, "PHONE_NUMBER")]

    def idn_email(self) -> list:
        r = self.rng
        locale, tlds, words = r.choice(IDN_EMAILS)
        fake = self.fakers[locale]
        local = fake.first_name().lower() + r.choice(("", ".", "_")) + \
            (fake.last_name().lower() if r.random() < 0.6 else str(r.randint(1, 99)))
        if r.random() < 0.3:
            local = fake.user_name()
        domain = f"{r.choice(words)}.{r.choice(tlds)}"
        if r.random() < 0.3:  # the same address as the mail system stores it
            domain = domain.encode("idna").decode()
        return [(f"{local}@{domain}", "EMAIL_ADDRESS")]

    def gtld_email(self) -> list:
        r = self.rng
        fake = self.fakers["en_US"]
        local = r.choice((fake.first_name().lower(), fake.user_name(),
                          f"{fake.first_name()[0].lower()}.{fake.last_name().lower()}"))
        domain = r.choice((fake.last_name().lower(), fake.word(), fake.domain_word()))
        return [(f"{local}@{domain}.{r.choice(NEW_GTLDS)}", "EMAIL_ADDRESS")]

    def new_card(self) -> list:
        r = self.rng
        kind = r.choice(("jcb15", "jcb15", "maestro", "maestro"))
        if kind == "jcb15":
            number = _luhn_complete(r.choice(("1800", "2131")), 15, r)
            groups = [number[:4], number[4:10], number[10:]]
        else:
            number = _luhn_complete(r.choice(("5018", "5020", "5038", "6304", "6759", "6761",
                                              "6763")), r.choice((12, 13, 15, 16, 18, 19)), r)
            groups = [number[i:i + 4] for i in range(0, len(number), 4)]
        style = r.random()
        return [(number if style < 0.4 else (" " if style < 0.8 else "-").join(groups),
                 "CREDIT_CARD")]

    def iban_any(self) -> list:
        r = self.rng
        iban = self.fakers[r.choice(IBAN_LOCALES)].iban()
        if r.random() < 0.6:
            iban = " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
        style = r.random()
        iban = iban.lower() if style < 0.5 else iban[:2].capitalize() + iban[2:].lower() \
            if style < 0.7 else iban
        return [(iban, "IBAN_CODE")]

    def address(self) -> list:
        r = self.rng
        while True:
            locale, form = r.choice(ADDRESS_LOCALES)
            fake = self.fakers[locale]
            street = " ".join(fake.street_address().split())
            if any(c.isdigit() for c in street):
                break  # a street without a house number names no one's home
        if r.random() < 0.15:
            street = street.lower() if r.random() < 0.5 else street.upper()
        state = fake.state_abbr() if hasattr(fake, "state_abbr") else ""
        parts = []
        for literal, slot, _, _ in string.Formatter().parse(form):
            if literal:
                parts.append((literal, None))
            if slot == "street":
                parts.append((street, STREET))
            elif slot == "postcode":
                parts.append((fake.postcode(), "POSTCODE"))
            elif slot == "city":
                parts.append((_city(fake), None))
            elif slot == "state":
                parts.append((state, None))
        return parts

    def po_box(self) -> list:
        r = self.rng
        fake = self.fakers["en_US"]
        box = r.choice(("PO Box", "P.O. Box", "POB", "Post Office Box", "P O Box"))
        return [(f"{box} {r.randint(1, 99999)}", STREET),
                (f", {fake.city()}, {fake.state_abbr()} ", None), (fake.zipcode(), "POSTCODE")]

    def military(self) -> list:
        fake, r = self.fakers["en_US"], self.rng
        value = r.choice((f"{fake.military_apo()}, APO {r.choice(('AA', 'AE', 'AP'))} "
                          f"{r.randint(9000, 96999):05d}",
                          f"{fake.military_ship()} {fake.last_name()}, FPO "
                          f"{r.choice(('AA', 'AE', 'AP'))} {r.randint(9000, 96999):05d}",
                          f"Unit {r.randint(1000, 9999)} Box {r.randint(1, 9999)}, DPO AE "
                          f"{r.randint(9000, 96999):05d}"))
        return [(value, STREET)]

    def postcode_labelled(self) -> list:
        r = self.rng
        locale = r.choice(("en_GB", "en_US", "de_DE", "en_CA", "nl_NL", "fr_FR"))
        label = r.choice(("postcode", "Postcode:", "zip", "ZIP code", "postal code", "PLZ",
                          "code postal"))
        return [(f"{label} ", None), (self.fakers[locale].postcode(), "POSTCODE")]

    def postcode_shape(self) -> list:
        return [(self.fakers[self.rng.choice(("en_GB", "en_CA"))].postcode(), "POSTCODE")]

    def licence(self) -> list:
        r = self.rng
        letters = string.ascii_uppercase
        value = r.choice((
            f"{r.choice(letters)}{r.randint(1000000, 9999999)}",  # California
            f"{r.randint(100000000, 999999999)}",  # New York, Texas-like
            f"{r.choice(letters)}{r.randint(100, 999)}-{r.randint(1000, 9999)}-"
            f"{r.randint(1000, 9999)}",  # Florida, Illinois
            "".join(r.choices(letters, k=5)) + f"{r.randint(100000, 999999)}"
            + r.choice(letters) + f"{r.randint(1, 9)}" + "".join(r.choices(letters, k=2)),  # UK
            f"{r.randint(10, 99)} {r.randint(100, 999)} {r.randint(100, 999)}",  # spaced
        ))
        label = r.choice(("DL#", "DL #", "DL:", "DL no.", "driver's license #",
                          "Driver's License No.", "driving licence number", "drivers lic.",
                          "Driver Licence:", "license no."))
        return [(f"{label} ", None), (value, "DRIVER_LICENSE")]

    def clean(self) -> list:
        return [(self.rng.choice(CLEAN), None)]


def render(template: str, filler: PatternFiller) -> dict:
    text, spans = "", []
    for literal, slot, _, _ in string.Formatter().parse(template):
        text += literal
        if slot is None:
            continue
        for piece, entity in getattr(filler, slot)():
            if entity:
                spans.append({"start": len(text), "end": len(text) + len(piece),
                              "entity": entity})
            text += piece
    return {"text": text, "spans": spans}


def generate(n: int = 600, seed: int = SEED) -> list[dict]:
    """``n`` labeled texts; the same ``n`` and ``seed`` give the same texts."""
    rng = random.Random(seed)
    locales = {loc for loc, _ in ADDRESS_LOCALES} | {loc for loc, _, _ in IDN_EMAILS} \
        | set(IBAN_LOCALES)
    fakers = seeded_fakers(sorted(locales), seed)
    filler = PatternFiller(rng, fakers)
    records = []
    for i in range(n):
        record = render(TEMPLATES[rng.randrange(len(TEMPLATES))], filler)
        record.update(id=i, locale="patterns")
        records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    counts: dict[str, int] = {}
    records = generate(args.n, args.seed)
    for r in records:
        for s in r["spans"]:
            counts[s["entity"]] = counts.get(s["entity"], 0) + 1
    print(json.dumps({"texts": len(records), "spans": dict(sorted(counts.items())),
                      "examples": [r["text"] for r in records[:12]]}, indent=2,
                     ensure_ascii=False))


if __name__ == "__main__":
    main()
