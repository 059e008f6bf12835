"""A labeled PII text set for measuring the scrubber: texts with character spans and entity types.

Deliberately unlike the demo generator (data/generate_demo.py): other domains (HR, banking, logs,
clinics, e-mail threads), other locales (Faker en_GB, de_DE, fr_FR, es_ES, it_IT, nl_NL, pt_BR,
en_IN, pl_PL, sv_SE, tr_TR, cs_CZ, …), hand-written formats (international phones, spaced and
dashed cards and IBANs, lower- and upper-case names, obfuscated e-mails, IPv6, SSNs without dashes)
and non-PII distractors (order numbers, versions, amounts, tracking codes) that a careless scrubber
flags. A quarter of the people carry names from a hand-written list that no gazetteer in privgen
is built from, so name recall is not measured on the scrubber's own word lists.

    python benchmarks/pii_textgen.py --n 1200 --out pii_texts.jsonl
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
import pii_textgen_names
import pii_textgen_patterns
from faker import Faker
from seeded_fakers import seeded_fakers

SEED = 4242
LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "en_IN",
           "pl_PL", "sv_SE", "tr_TR", "cs_CZ", "da_DK", "en_AU", "en_IE")
# Regions whose example mobile numbers seed the "international" phone formats.
PHONE_REGIONS = ("JP", "KR", "AU", "ZA", "NG", "MX", "AR", "SG", "AE", "BR", "IN", "CN", "RU",
                 "EG", "KE", "PH", "ID", "TR", "SE", "CH", "NL", "BE", "PL", "IE", "NZ", "CA")
# People whose names come from no Faker locale that privgen's gazetteer reads.
HELD_OUT_NAMES = (
    ("Oluwaseun", "Adeyemi"), ("Chiamaka", "Okonkwo"), ("Kwame", "Mensah"), ("Wanjiru", "Kamau"),
    ("Tendai", "Moyo"), ("Wei", "Zhang"), ("Xiaoling", "Chen"), ("Haruto", "Tanaka"),
    ("Yui", "Nakamura"), ("Min-jun", "Park"), ("Seo-yeon", "Choi"), ("Thanh", "Nguyen"),
    ("Siriporn", "Wongsakul"), ("Ilango", "Venkataraman"), ("Thenmozhi", "Subramanian"),
    ("Shahriar", "Chowdhury"), ("Nusrat", "Siddiqui"), ("Yazan", "Al-Khatib"), ("Rasha", "Haddad"),
    ("Dariush", "Tehrani"), ("Batbayar", "Dorj"), ("Tsetseg", "Ganbold"), ("Nizhoni", "Begay"),
    ("Wayra", "Quispe"), ("Yohannes", "Girma"), ("Taras", "Petrenko"), ("Oksana", "Shevchuk"),
    ("Giorgi", "Beridze"), ("Tamari", "Kapanadze"), ("Aigerim", "Nurlanovna"),
    ("Bolat", "Seitkali"),
    ("Ngozi", "Eze"), ("Kofi", "Boateng"), ("Amani", "Mwangi"), ("Lhamo", "Tsering"),
    ("Ravshan", "Karimov"), ("Eitan", "Ben-David"), ("Yerlan", "Abenov"), ("Mekdes", "Tesfaye"),
    ("Abebe", "Bekele"),
)
PRODUCTS = ("Aurora X2 router", "ThinkPad T14", "Kindle Paperwhite", "Galaxy Buds2", "Nest Hub",
            "Pixel 8", "MacBook Air", "Roomba j7", "Fitbit Charge 6", "Model Y wall charger")
RELATIONS = ("mother", "husband", "wife", "brother", "sister", "partner", "son", "daughter")
BICS = ("COBADEFFXXX", "DEUTDEDBFRA", "BNPAFRPPXXX", "INGBNL2A", "BARCGB22", "CAIXESBBXXX")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")

# Entity of each PII slot; every other slot is a distractor and stays unlabeled.
ENTITY = {"name": "PERSON", "name2": "PERSON", "email": "EMAIL_ADDRESS",
          "phone": "PHONE_NUMBER", "card": "CREDIT_CARD", "iban": "IBAN_CODE",
          "ip": "IP_ADDRESS", "ssn": "US_SSN", "url": "URL", "city": "LOCATION",
          "date": "DATE_TIME"}

TEMPLATES = (
    # support and CRM
    "Hi, I'm {name} and my order {order} never arrived. You can reach me on {phone} or at "
    "{email}.",
    "please call me back on {phone}, ask for {name:first_lower}. thx",
    "Customer {name} ({email}) reported that the {product} stopped working after the {version} "
    "update.",
    "From: {name} <{email}>\nSubject: Refund for {order}\n\nHello, the refund of {amount} should "
    "go to my account {iban}. Kind regards, {name:first}",
    "my email is {email:obf} - dont want spam bots to see it lol",
    "Contact {name:title} at {phone} regarding invoice {ticket}.",
    "hey it's {name:lower}, new number is {phone} and my email changed to {email}",
    "Shipping to {name}, {city}. Tracking {tracking}, {qty} items.",
    "Hallo, this is {name} from {city}. My mobile is {phone:intl} - please don't share it.",
    "my sister {name2:first} and i both bought the {product}. her number is {phone}",
    "can u send the invoice to {email} pls, my coworker {name2:first_lower} needs it too",
    "New lead: {name}, {company}, {phone:intl}, {email}, {city}.",
    "Please remove me from your mailing list. {email}",
    "{name} <{email}> wrote:\n> is the {product} still under warranty?\nYes, until {date}.",
    "pls reach {name:lower} at {email:obf} or {phone}",
    "Reply to: {email:upper}",
    "Signed, {name:first} - sent from my {product}",
    "Kontakt: {name}, Tel. {phone}, E-Mail: {email}",
    "Mme {name:last} a appelé depuis le {phone}. Rappeler avant {time}.",
    "Ticket {ticket}: caller gave her name as {name:upper} and a callback number {phone}.",
    # banking and payments
    "We charged card {card} for {amount} on {date}. If this was not you, call {phone:intl}.",
    "Transfer {amount} to {name} (IBAN {iban}) before {date}, reference {ticket}.",
    "The payment with {card} failed (code 05). Customer: {name}, <{email}>.",
    "Bank details: {name:upper}, IBAN: {iban}, BIC {bic}",
    "i paid with my card {card} but got charged {amount} twice!!",
    "Wire details for {name}: {iban} / amount {amount} / due {date}",
    "Chargeback opened for {card} ({amount}); cardholder {name:last_first}.",
    "Direct debit mandate signed by {name} for account {iban} on {date}.",
    # HR and clinics
    "Name: {name:upper}\nDate of birth: {date}\nSSN: {ssn}\nCity: {city}\nPhone: {phone}",
    "{name:last_first} - SSN {ssn} - employee since {date}",
    "Social security number {ssn} was entered twice for {name}.",
    "Dr. {name:last} saw the patient on {date}; follow-up confirmed by phone {phone}.",
    "Employee {name:first} {name:last} (SSN {ssn}) moved to the {city} office.",
    "Emergency contact: {name2} ({relation}), {phone}",
    "Dear {name:title}, thank you for your application. We will contact you at {email} within "
    "{qty} days.",
    "Born {date} in {city}, {name} joined the team in {year}.",
    "Meeting notes: {name} and {name2} agreed to ship {product} {version} by {date}.",
    "W-4 received from {name}; SSN {ssn}; mailing city {city}.",
    # logs and IT
    "[{time}] sshd: Failed password for root from {ip} port {port} ssh2",
    "Request from {ip:v6} blocked by WAF rule 942100; session {session} flagged.",
    "Please whitelist {ip} and {ip} for the {company} VPN.",
    "Profile updated: {url} (owner {name}, ip {ip})",
    "Visit my portfolio at {url} or email {email:obf}.",
    "Server {ip} ({city} DC, rack 12) rebooted at {time} after kernel {version} upgrade.",
    "Reset requested for account {email}; origin address {ip:v6}; user agent Firefox/{version}.",
    "Traceroute hop 7: {ip} 23.4 ms; hop 8: {ip} 25.1 ms",
    "login ok user={email} src={ip} dst={ip:private} t={time}",
    "Shared link {url} was opened from {ip} by {name}.",
    # no personal data at all
    "Order {order} for {amount} has been dispatched; expected delivery in {qty} working days.",
    "The {product} firmware {version} fixes the Bluetooth pairing bug reported in ticket "
    "{ticket}.",
    "Invoice {ticket} over {amount} is due in {qty} days; parcel {tracking} left the depot at "
    "{time}.",
    "Build {version} of the {company} app is live; {qty} crash reports since {time}.",
)


@dataclass
class Person:
    first: str
    last: str
    held_out: bool


def _ascii(s: str) -> str:
    folded = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower() if c.isalnum())


class Filler:
    """Values for one text's slots, drawn from one locale."""

    def __init__(self, fake: Faker, rng: random.Random) -> None:
        self.fake, self.rng = fake, rng
        self.people: dict[str, Person] = {}

    def person(self, slot: str) -> Person:
        if slot not in self.people:
            if self.rng.random() < 0.25:
                first, last = self.rng.choice(HELD_OUT_NAMES)
                self.people[slot] = Person(first, last, True)
            else:
                self.people[slot] = Person(self.fake.first_name(), self.fake.last_name(), False)
        return self.people[slot]

    def name(self, slot: str, form: str) -> tuple[str, str, str]:
        """(text before the name, the name, text after): titles stay outside the span."""
        p = self.person(slot)
        full = f"{p.first} {p.last}"
        if form == "first":
            return "", p.first, ""
        if form == "last":
            return "", p.last, ""
        if form == "first_lower":
            return "", p.first.lower(), ""
        if form == "lower":
            return "", full.lower(), ""
        if form == "upper":
            return "", full.upper(), ""
        if form == "last_first":
            return "", f"{p.last}, {p.first}", ""
        if form == "title":
            title = self.rng.choice(("Mr. ", "Ms. ", "Mrs. ", "Dr. ", "Prof. ", "Mr ", "Ms "))
            return title, (p.last if self.rng.random() < 0.6 else full), ""
        return "", full, ""

    def email(self, form: str) -> str:
        p = self.person("name")
        local = self.rng.choice((
            f"{_ascii(p.first)}.{_ascii(p.last)}", f"{_ascii(p.first)[0]}{_ascii(p.last)}",
            f"{_ascii(p.last)}{self.rng.randint(1, 99)}", self.fake.user_name()))
        domain = self.rng.choice((self.fake.free_email_domain(), self.fake.domain_name()))
        if form == "obf":
            user, dom = local, domain.split(".")
            at, dot = self.rng.choice(((" [at] ", " [dot] "), ("(at)", "(dot)"), (" at ", " dot "),
                                       (" AT ", " DOT "), (" {at} ", "."), (" @ ", " . ")))
            return user + at + dot.join(dom)
        address = f"{local}@{domain}"
        return address.upper() if form == "upper" else address

    def phone(self, form: str) -> str:
        if form == "intl" or self.rng.random() < 0.35:
            region = self.rng.choice(PHONE_REGIONS)
            example = phonenumbers.example_number_for_type(region,
                                                           phonenumbers.PhoneNumberType.MOBILE)
            national = str(example.national_number)
            keep = max(2, len(national) - 4)
            randomized = national[:keep] + "".join(self.rng.choice(string.digits)
                                                   for _ in national[keep:])
            number = phonenumbers.parse(f"+{example.country_code}{randomized}")
            style = self.rng.random()
            fmt = phonenumbers.PhoneNumberFormat
            if style < 0.45:
                return phonenumbers.format_number(number, fmt.INTERNATIONAL)
            if style < 0.6:
                return phonenumbers.format_number(number, fmt.E164)
            if style < 0.75:
                return "00" + phonenumbers.format_number(number, fmt.INTERNATIONAL)[1:]
            if style < 0.85:
                return f"(+{example.country_code}) {randomized[:3]} {randomized[3:]}"
            return phonenumbers.format_number(number, fmt.NATIONAL)
        number = self.fake.phone_number()
        return number.split("x")[0].split(" ext")[0].strip()  # extensions are not labeled

    def city(self) -> str:
        # Faker's it_IT city list is built from a set, so its order, and the city a seed draws,
        # changed with each process's hash seed; the same draw from the sorted list keeps the
        # texts the same from run to run.
        for provider in self.fake.providers:
            if type(provider).__module__ == "faker.providers.address.it_IT":
                return self.fake.random_element(sorted(provider.cities))
        return self.fake.city()

    def card(self) -> str:
        kind = self.rng.choice(("visa16", "mastercard", "amex", "discover", "jcb16", "visa16",
                                "mastercard", "diners", "maestro"))
        digits = self.fake.credit_card_number(card_type=kind)
        style = self.rng.random()
        if style < 0.35:
            return digits
        groups = [digits[i:i + 4] for i in range(0, len(digits), 4)]
        if kind == "amex" and len(digits) == 15:
            groups = [digits[:4], digits[4:10], digits[10:]]
        return (" " if style < 0.75 else "-").join(groups)

    def iban(self) -> str:
        iban = self.fake.iban()
        if self.rng.random() < 0.5:
            return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
        return iban

    def ip(self, form: str) -> str:
        if form == "v6" or (form == "" and self.rng.random() < 0.25):
            address = ipaddress.IPv6Address(self.fake.ipv6())
            return address.compressed if self.rng.random() < 0.5 else address.exploded
        if form == "private":
            return self.fake.ipv4_private()
        return self.fake.ipv4_public() if self.rng.random() < 0.7 else self.fake.ipv4_private()

    def ssn(self) -> str:
        ssn = self._ssn()
        style = self.rng.random()
        if style < 0.6:
            return ssn
        if style < 0.8:
            return ssn.replace("-", " ")
        return ssn.replace("-", "")

    def _ssn(self) -> str:
        area = self.rng.choice([a for a in range(1, 900) if a != 666])
        return f"{area:03d}-{self.rng.randint(1, 99):02d}-{self.rng.randint(1, 9999):04d}"

    def url(self) -> str:
        f, r = self.fake, self.rng
        return r.choice((f.url(), f.uri(), f"https://www.{f.domain_name()}/{f.user_name()}",
                         f"linkedin.com/in/{f.user_name()}-{r.randint(10, 999)}"))

    def date(self) -> str:
        d = self.fake.date_of_birth(minimum_age=18, maximum_age=90)
        month = _MONTHS[d.month - 1]
        return self.rng.choice((
            d.isoformat(), f"{d.day:02d}/{d.month:02d}/{d.year}", f"{d.day} {month} {d.year}",
            f"{month} {d.day}, {d.year}", f"{d.day:02d}.{d.month:02d}.{d.year}",
            f"{d.month}/{d.day}/{d.year}", f"{d.day} {month[:3]} {d.year}"))

    def distractor(self, slot: str) -> str:
        r, f = self.rng, self.fake
        match slot:
            case "order":
                return r.choice((f"ORD-{r.randint(100000, 999999)}",
                                 f"#{r.randint(10000, 99999)}", f"A{r.randint(10**7, 10**8 - 1)}",
                                 str(r.randint(10**6, 10**7 - 1))))
            case "amount":
                return r.choice((f"€{r.randint(5, 2500)},{r.randint(0, 99):02d}",
                                 f"${r.randint(5, 900)}.{r.randint(0, 99):02d}",
                                 f"£{r.randint(5, 300)}.50", f"{r.randint(100, 9999)} EUR"))
            case "product":
                return r.choice(PRODUCTS)
            case "company":
                return f.company()
            case "version":
                return r.choice((f"{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
                                 f"v{r.randint(1, 4)}.{r.randint(0, 9)}",
                                 f"10.0.{r.randint(10000, 22000)}",
                                 f"{r.randint(1, 5)}.{r.randint(0, 9)}.{r.randint(0, 9)}."
                                 f"{r.randint(100, 999)}"))
            case "time":
                return f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
            case "ticket":
                return r.choice((f"INC{r.randint(10**6, 10**7 - 1)}",
                                 f"TCK-2024-{r.randint(1, 9999):04d}"))
            case "tracking":
                return r.choice(("1Z" + "".join(r.choices(string.ascii_uppercase + string.digits,
                                                          k=16)),
                                 f"JJD{r.randint(10**17, 10**18 - 1)}"))
            case "qty":
                return str(r.randint(2, 14))
            case "year":
                return str(r.randint(2005, 2024))
            case "port":
                return str(r.randint(1024, 65535))
            case "session":
                return f.uuid4()[:18]
            case "bic":
                return r.choice(BICS)
            case "relation":
                return r.choice(RELATIONS)
        raise KeyError(slot)


def render(template: str, filler: Filler) -> dict:
    text, spans = "", []
    for literal, slot, form, _ in string.Formatter().parse(template):
        text += literal
        if slot is None:
            continue
        before, value, after = "", "", ""
        if slot in ("name", "name2"):
            before, value, after = filler.name(slot, form or "")
        elif slot == "email":
            value = filler.email(form or "")
        elif slot == "phone":
            value = filler.phone(form or "")
        elif slot == "ip":
            value = filler.ip(form or "")
        elif slot in ("card", "iban", "ssn", "url", "date"):
            value = getattr(filler, slot)()
        elif slot == "city":
            value = filler.city()
        else:
            text += filler.distractor(slot)
            continue
        text += before
        span = {"start": len(text), "end": len(text) + len(value), "entity": ENTITY[slot]}
        if slot in ("name", "name2") and filler.person(slot).held_out:
            span["held_out"] = True
        spans.append(span)
        text += value + after
    return {"text": text, "spans": spans}


def generate(n: int = 1200, seed: int = SEED) -> list[dict]:
    """``n`` labeled texts; the same ``n`` and ``seed`` give the same texts."""
    rng = random.Random(seed)
    fakers = seeded_fakers(LOCALES, seed)
    records = []
    for i in range(n):
        locale = LOCALES[i % len(LOCALES)]
        template = TEMPLATES[rng.randrange(len(TEMPLATES))]
        record = render(template, Filler(fakers[locale], rng))
        record.update(id=i, locale=locale)
        records.append(record)
    # Hard name forms and clean informal texts (issue 12), half as many again, from their own
    # random stream so the texts above stay the same.
    for i, record in enumerate(pii_textgen_names.generate(n // 2, seed + 1), start=n):
        record.update(id=i)
        records.append(record)
    # Phones, e-mails, cards, IBANs, street addresses, postcodes and licence numbers in issue
    # 12's forms, half as many again, from their own random stream.
    for i, record in enumerate(pii_textgen_patterns.generate(n // 2, seed + 2),
                               start=len(records)):
        record.update(id=i)
        records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, help="JSONL file; without it, a summary is printed")
    args = parser.parse_args()
    records = generate(args.n, args.seed)
    if args.out:
        args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    counts: dict[str, int] = {}
    for r in records:
        for s in r["spans"]:
            counts[s["entity"]] = counts.get(s["entity"], 0) + 1
    print(json.dumps({"texts": len(records), "spans": dict(sorted(counts.items()))}, indent=2))


if __name__ == "__main__":
    main()
