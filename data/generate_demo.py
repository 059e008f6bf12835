"""Seeded generator for the demo customer-support tickets (data/demo/tickets.csv)
and the ground truth of every planted personal value (data/demo/planted_pii.json).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import random
import re
import tempfile
from pathlib import Path

import pandas as pd
from faker import Faker

DEFAULT_ROWS = 3000
DEFAULT_SEED = 20261126
DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "demo"

COLUMNS = [
    "ticket_id",
    "customer_id",
    "full_name",
    "email",
    "phone",
    "birth_date",
    "postcode",
    "city",
    "product",
    "channel",
    "rating",
    "created_at",
    "message",
]

PII_KEYS = [
    "full_names",
    "first_names",
    "last_names",
    "emails",
    "phones",
    "card_numbers",
    "ibans",
    "other_person_names",
    "order_numbers",
]

BAD_KINDS = [
    "missing_email",
    "missing_message",
    "missing_product",
    "malformed_email",
    "duplicate_ticket_id",
    "rating_out_of_range",
]
BAD_ROW_FRACTION = 0.02
OUT_OF_RANGE_RATINGS = [0, 6, 9, -1]

# (city, 3-digit ZIP prefix, local area code, weight). Prefixes starting with 0
# are included on purpose so that readers which parse postcode as int break.
CITIES = [
    ("New York", "100", "212", 16),
    ("Los Angeles", "900", "213", 12),
    ("Chicago", "606", "312", 9),
    ("Houston", "770", "713", 8),
    ("Phoenix", "850", "602", 6),
    ("Philadelphia", "191", "215", 5),
    ("San Antonio", "782", "210", 4),
    ("San Diego", "921", "619", 4),
    ("Dallas", "752", "214", 4),
    ("Austin", "787", "512", 4),
    ("Seattle", "981", "206", 4),
    ("Denver", "802", "303", 3),
    ("Boston", "021", "617", 4),
    ("Atlanta", "303", "404", 3),
    ("Miami", "331", "305", 3),
    ("Nashville", "372", "615", 2),
    ("Minneapolis", "554", "612", 2),
    ("Detroit", "482", "313", 2),
    ("Providence", "029", "401", 2),
    ("Newark", "071", "973", 3),
]

PRODUCTS = [
    ("Nimbus Phone", 24),
    ("Aurora Laptop", 18),
    ("Pulse Earbuds", 15),
    ("Echo Speaker", 11),
    ("Flux Smartwatch", 10),
    ("Orbit Tablet", 9),
    ("Vertex Monitor", 7),
    ("Zenith Router", 6),
]

CHANNELS = [("email", 34), ("chat", 27), ("web_form", 20), ("phone", 12), ("social", 7)]

# Category weights and the rating distribution (1..5) each category draws from;
# this is what ties the rating to the sentiment of the message.
CATEGORIES = {
    "complaint": (25, [45, 30, 15, 7, 3]),
    "delivery": (17, [35, 30, 20, 10, 5]),
    "refund": (13, [40, 30, 18, 8, 4]),
    "account": (12, [20, 25, 30, 15, 10]),
    "question": (18, [4, 8, 30, 36, 22]),
    "praise": (15, [1, 2, 7, 30, 60]),
}

# {order} expands either to a plain "my order" or to a phrase carrying an
# ORD- number, so order numbers land mid-sentence rather than always appended.
TEMPLATES = {
    "complaint": [
        "The {product} from {order} stopped charging after two weeks; I expected better quality.",
        "The screen on my {product} has a dead line across it, right out of the box.",
        "This is the third time my {product} has crashed during an update, which is unacceptable.",
        "The {product} that came with {order} overheats constantly, even when it is idle.",
        "Honestly, the {product} is the worst thing I bought this year; the battery is awful.",
    ],
    "delivery": [
        "The delivery for {order} was due last Tuesday, but the tracking has not moved since.",
        "The box with my {product} arrived crushed and the charger was missing.",
        "I was told {order} had shipped, yet the courier says they never got a {product} from you.",
        "When will my {product} actually be delivered? It has been stuck at the depot for days.",
        "My {product} was left at the wrong address and a neighbor found it two streets away.",
    ],
    "refund": [
        "I would like to return the {product} from {order} for a full refund, it does not suit me.",
        "I sent the {product} back three weeks ago and I still have not seen the refund.",
        "I was charged twice for the {product} and need one of the payments reversed.",
        "Please cancel {order} and refund me, I found the {product} cheaper elsewhere.",
        "The refund for my {product} came through $40 short, can someone check what happened?",
    ],
    "account": [
        "I cannot log in since resetting my password, so I cannot register my {product}.",
        "Someone changed the email on my account, and now I cannot see {order} for the {product}.",
        "The app keeps telling me my {product} is already linked to another account.",
        "Please update the shipping address on my account before {order} with the {product} ships.",
        "I keep getting login codes I never asked for, and the warranty for my {product} vanished.",
    ],
    "question": [
        "Does the {product} support fast charging with third-party cables?",
        "Is there a way to extend the warranty on my {product}? I bought it about ten months ago.",
        "Quick question: can the {product} be used abroad, or is it region-locked?",
        "Which firmware version should my {product} be on, and how do I check it?",
        "Will the {product} work with my older model, or do I need an adapter?",
    ],
    "praise": [
        "Just wanted to say the {product} is fantastic, setup took less than five minutes.",
        "Your chat agent fixed the problem with my {product} in one go, thank you so much.",
        "I love my new {product}; it is way better than I expected for the price.",
        "Great experience overall, the {product} arrived a day early and works perfectly.",
        "Kudos to the support team for replacing my faulty {product} without any hassle.",
    ],
}

FOLLOW_UPS = {
    "complaint": [
        "I have already tried resetting it twice.",
        "Please tell me what my options are.",
        "I expected a lot more for the price.",
    ],
    "delivery": [
        "Could you please look into this today?",
        "I really need it before the weekend.",
        "Nobody has replied to my last two messages.",
    ],
    "refund": [
        "I still have the original packaging.",
        "Please confirm once it has been processed.",
        "I would prefer the money back rather than store credit.",
    ],
    "account": [
        "I am worried my details were compromised.",
        "Please let me know what you need to verify it is me.",
        "I have tried the reset link four times now.",
    ],
    "question": [
        "The manual does not say anything about it.",
        "Thanks in advance for any pointers.",
        "I could not find the answer in the FAQ.",
    ],
    "praise": [
        "I will definitely recommend you to friends.",
        "Keep up the good work.",
        "Five stars from me.",
    ],
}

ORDER_PHRASES = ["my order {n}", "order {n}", "order #{n}", "my order ({n})"]
ORDER_SENTENCES = [
    "My order number is {n}.",
    "The order number is {n}, in case you need it.",
    "Reference: {n}.",
    "This is about order {n}.",
]
INTROS = [
    "Hi, this is {first}.",
    "Hello, my name is {full}.",
    "{full} here.",
    "Hi team, {first} here.",
    "Dear support, I am {full}.",
]
INTROS_WITH_CONTACT = [
    "Hi, this is {full}, reachable at {contact}.",
    "Hello, {first} here, you can reach me on {contact}.",
]
CONTACT_SENTENCES = {
    "email": [
        "You can reach me at {email}.",
        "Send any updates to {email}, please.",
        "My email is {email} if you need anything else.",
    ],
    "phone": [
        "Please call me back on {phone}.",
        "My number is {phone}, best after 5pm.",
        "If it is easier, call {phone}.",
    ],
    "both": [
        "Email me at {email} or call {phone}.",
        "You can reach me on {phone} or at {email}.",
        "Contact details: {email}, {phone}.",
    ],
}
SIGNOFFS_NAME = [
    "Thanks, {full}",
    "Thanks, {first}",
    "Best regards, {full}",
    "Cheers, {first}",
    "- {first}",
]
SIGNOFFS_CONTACT = [
    "Thanks, {full} | {contact}",
    "{full}, {contact}",
    "Regards, {first} - {contact}",
]
SIGNOFFS_ANON = ["Thanks.", "Thank you!", "Regards."]
CARD_SENTENCES = [
    "I paid with my card {card}.",
    "The charge on card {card} looks wrong.",
    "Please put the money back on the card I used, {card}.",
    "My card number is {card} if you need to verify the purchase.",
]
IBAN_SENTENCES = [
    "Please send the refund to my bank account {iban}.",
    "My IBAN is {iban}.",
    "You can wire the money to IBAN {iban} instead of the card.",
]
OTHER_PERSON_SENTENCES = [
    "My {rel} {other} ordered it for me.",
    "I am writing on behalf of my {rel}, {other}.",
    "{other} from your store told me to contact you.",
    "I already spoke to {other} on the phone last week.",
    "Please ship the replacement to my {rel} {other} instead.",
]
RELATIONS = {
    "husband": "male",
    "wife": "female",
    "son": "male",
    "daughter": "female",
    "colleague": None,
    "neighbor": None,
}
PADDING = ["I appreciate your help.", "Thanks in advance.", "Looking forward to hearing from you."]

EMAIL_DOMAINS = [
    ("gmail.com", 40),
    ("yahoo.com", 15),
    ("hotmail.com", 10),
    ("outlook.com", 12),
    ("icloud.com", 8),
    ("aol.com", 3),
]
CARD_TYPES = [("visa16", 50), ("mastercard", 30), ("amex", 12), ("discover", 8)]
IBAN_LOCALES = ["en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES"]

MESSAGE_MIN_CHARS = 80
MESSAGE_MAX_CHARS = 400
MAX_SENTENCES = 4

P_ORDER = 0.40
P_NAME = 0.65
P_EMAIL = 0.25
P_PHONE = 0.25
P_CARD = 0.08
P_IBAN = 0.08
P_OTHER_PERSON = 0.08
P_PHONE_REFORMATTED = 0.25

CREATED_START = dt.datetime(2025, 1, 1)
CREATED_END = dt.datetime(2026, 10, 31, 23, 59, 59)
# Support traffic peaks in office hours; a flat hour distribution looks synthetic.
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 9, 8, 9, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1]
REFERENCE_YEAR = 2026


_SENTENCE_END = re.compile(r"[.?!](?=\s|$)")


def _n_sentences(parts: list[str]) -> int:
    return sum(len(_SENTENCE_END.findall(part)) for part in parts)


def _weighted(rng: random.Random, pairs):
    items, weights = zip(*pairs, strict=True)
    return rng.choices(items, weights=weights, k=1)[0]


def _phone_parts(rng: random.Random, area_code: str) -> tuple[str, str, str]:
    while True:
        exchange = rng.randint(200, 999)
        # N11 exchanges are reserved service codes (411, 911, ...).
        if exchange % 100 != 11:
            return area_code, str(exchange), f"{rng.randint(0, 9999):04d}"


PHONE_FORMATS = {
    "paren": "({0}) {1}-{2}",
    "dash": "{0}-{1}-{2}",
    "intl": "+1-{0}-{1}-{2}",
    "digits": "{0}{1}{2}",
    "dots": "{0}.{1}.{2}",
}
COLUMN_PHONE_FORMATS = [("paren", 50), ("dash", 30), ("intl", 20)]


def _email_for(rng: random.Random, first: str, last: str, taken: set[str]) -> str:
    f = re.sub(r"[^a-z]", "", first.lower())
    la = re.sub(r"[^a-z]", "", last.lower())
    patterns = [
        (f"{f}.{la}", 35),
        (f"{f}{la}", 15),
        (f"{f[0]}.{la}", 10),
        (f"{f}_{la}{rng.randint(1, 99)}", 15),
        (f"{f}.{la}{rng.randint(60, 99)}", 10),
        (f"{la}.{f}", 10),
        (f"{f}{rng.randint(1, 999)}", 5),
    ]
    local = _weighted(rng, patterns)
    domain = _weighted(rng, EMAIL_DOMAINS)
    email = f"{local}@{domain}"
    # Identical emails for different customers would blur the per-customer
    # ground truth that leak tests rely on.
    while email in taken:
        email = f"{local}{rng.randint(100, 9999)}@{domain}"
    taken.add(email)
    return email


def _make_customers(n: int, rng: random.Random, fake: Faker) -> tuple[list[dict], set[str]]:
    city_pairs = [((c, z, a), w) for c, z, a, w in CITIES]
    area_codes = [a for _, _, a, _ in CITIES]
    ids = rng.sample(range(1, 100000), n)
    names: set[str] = set()
    emails: set[str] = set()
    phones: set[str] = set()
    customers = []
    for cid in ids:
        while True:
            first = fake.first_name()
            last = fake.last_name()
            if f"{first} {last}" not in names:
                break
        names.add(f"{first} {last}")
        city, prefix, area = _weighted(rng, city_pairs)
        # Some people keep the number from a previous city.
        if rng.random() < 0.15:
            area = rng.choice(area_codes)
        while True:
            parts = _phone_parts(rng, area)
            if parts not in phones:
                break
        phones.add(parts)
        age = min(85, int(rng.triangular(18, 86, 34)))
        birth = dt.date(REFERENCE_YEAR - age, 1, 1) + dt.timedelta(days=rng.randrange(365))
        customers.append(
            {
                "customer_id": f"C-{cid:05d}",
                "first": first,
                "last": last,
                "full_name": f"{first} {last}",
                "email": _email_for(rng, first, last, emails),
                "phone_parts": parts,
                "phone": PHONE_FORMATS[_weighted(rng, COLUMN_PHONE_FORMATS)].format(*parts),
                "birth_date": birth.isoformat(),
                "postcode": f"{prefix}{rng.randint(0, 99):02d}",
                "city": city,
            }
        )
    return customers, names


def _created_at(rng: random.Random) -> str:
    span_days = (CREATED_END.date() - CREATED_START.date()).days + 1
    day = CREATED_START + dt.timedelta(days=rng.randrange(span_days))
    hour = rng.choices(range(24), weights=HOUR_WEIGHTS, k=1)[0]
    stamp = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60))
    return stamp.strftime("%Y-%m-%dT%H:%M:%S")


class _PiiSource:
    """Draws fresh order numbers, cards, IBANs and third-party names, never reusing one."""

    def __init__(self, rng: random.Random, fake: Faker, seed: int, customer_names: set[str]):
        self.rng = rng
        self.fake = fake
        self.iban_fakers = []
        for offset, locale in enumerate(IBAN_LOCALES, start=1):
            f = Faker(locale)
            f.seed_instance(seed + offset)
            self.iban_fakers.append(f)
        self.used_names = set(customer_names)
        self.used = set()

    def _fresh(self, draw):
        while True:
            value = draw()
            if value not in self.used:
                self.used.add(value)
                return value

    def order(self) -> str:
        return self._fresh(lambda: f"ORD-{self.rng.randint(0, 9999999):07d}")

    def card(self) -> str:
        return self._fresh(lambda: self.fake.credit_card_number(_weighted(self.rng, CARD_TYPES)))

    def iban(self) -> str:
        return self._fresh(lambda: self.rng.choice(self.iban_fakers).iban())

    def person(self, gender: str | None) -> str:
        draw_first = {
            "male": self.fake.first_name_male,
            "female": self.fake.first_name_female,
        }.get(gender, self.fake.first_name)
        # A third party who shares a customer's name would be indistinguishable
        # from that customer in leak scans.
        while True:
            name = f"{draw_first()} {self.fake.last_name()}"
            if name not in self.used_names:
                self.used_names.add(name)
                return name


def _message(
    rng: random.Random, cust: dict, product: str, category: str, src: _PiiSource
) -> tuple[str | None, dict | None]:
    """Return the message text and the personal values planted in it.

    Returns (None, None) when the draw breaks a length or sentence limit.
    """
    planted = {k: [] for k in PII_KEYS}
    first, full = cust["first"], cust["full_name"]

    use_name = rng.random() < P_NAME
    use_email = rng.random() < P_EMAIL
    use_phone = rng.random() < P_PHONE
    order = src.order() if rng.random() < P_ORDER else None
    extras = []
    if rng.random() < P_CARD:
        card = src.card()
        planted["card_numbers"].append(card)
        extras.append(rng.choice(CARD_SENTENCES).format(card=card))
    if rng.random() < P_IBAN:
        iban = src.iban()
        planted["ibans"].append(iban)
        extras.append(rng.choice(IBAN_SENTENCES).format(iban=iban))
    if rng.random() < P_OTHER_PERSON:
        rel = rng.choice(list(RELATIONS))
        other = src.person(RELATIONS[rel])
        planted["other_person_names"].append(other)
        extras.append(rng.choice(OTHER_PERSON_SENTENCES).format(rel=rel, other=other))

    phone = cust["phone"]
    if use_phone and rng.random() < P_PHONE_REFORMATTED:
        parts = cust["phone_parts"]
        alternatives = [fmt for fmt in PHONE_FORMATS.values() if fmt.format(*parts) != phone]
        phone = rng.choice(alternatives).format(*parts)
    if use_phone:
        planted["phones"].append(phone)
    if use_email:
        planted["emails"].append(cust["email"])
    contact_values = [v for v, on in ((cust["email"], use_email), (phone, use_phone)) if on]

    template = rng.choice(TEMPLATES[category])
    if order is not None:
        planted["order_numbers"].append(order)
        if "{order}" in template:
            order_phrase = rng.choice(ORDER_PHRASES).format(n=order)
        else:
            sentence = rng.choice(ORDER_SENTENCES).format(n=order)
            extras.insert(rng.randrange(len(extras) + 1), sentence)
            order_phrase = None
    else:
        order_phrase = None
    core = [template.format(product=product, order=order_phrase or "my last order")]
    if rng.random() < 0.45:
        core.append(rng.choice(FOLLOW_UPS[category]))

    # Name and contact details are spread over intro, body and sign-off so
    # that detectors cannot rely on a fixed position.
    placement = rng.random()
    name_in_intro = use_name and placement < 0.55
    name_in_signoff = use_name and (placement >= 0.35)
    contact_slot = None
    if contact_values:
        slots = ["sentence", "sentence", "sentence"]
        if name_in_intro and len(contact_values) == 1:
            slots.append("intro")
        if name_in_signoff:
            slots.append("signoff")
        contact_slot = rng.choice(slots)

    def budget() -> int:
        standalone = int(name_in_intro) + int(contact_slot == "sentence")
        return _n_sentences(core + extras) + standalone

    # Keep to at most four sentences by shedding the least informative parts first.
    if budget() > MAX_SENTENCES and len(core) > 1:
        core.pop()
    if budget() > MAX_SENTENCES and contact_slot == "sentence":
        contact_slot = "signoff"
        name_in_signoff = True
    if budget() > MAX_SENTENCES and name_in_intro:
        name_in_intro = False
        name_in_signoff = True
    if budget() > MAX_SENTENCES:
        # Rare (several extras at once); the caller redraws rather than
        # silently dropping values that are already recorded as planted.
        return None, None

    sentences = list(core)
    for extra in extras:
        sentences.insert(rng.randrange(len(sentences) + 1), extra)
    if contact_slot == "sentence":
        key = "both" if len(contact_values) == 2 else ("email" if use_email else "phone")
        sentence = rng.choice(CONTACT_SENTENCES[key]).format(email=cust["email"], phone=phone)
        # Mostly after the opening sentence, where people usually put it.
        lowest = 1 if rng.random() < 0.8 else 0
        sentences.insert(rng.randrange(lowest, len(sentences) + 1), sentence)
    contact_text = " / ".join(contact_values)
    if name_in_intro:
        if contact_slot == "intro":
            intro = rng.choice(INTROS_WITH_CONTACT)
            intro = intro.format(first=first, full=full, contact=contact_text)
        else:
            intro = rng.choice(INTROS).format(first=first, full=full)
        sentences.insert(0, intro)
    if _n_sentences(sentences) < MAX_SENTENCES and len(" ".join(sentences)) < MESSAGE_MIN_CHARS:
        sentences.append(rng.choice(PADDING))
    if contact_slot == "signoff":
        signoff = rng.choice(SIGNOFFS_CONTACT).format(first=first, full=full, contact=contact_text)
    elif name_in_signoff:
        signoff = rng.choice(SIGNOFFS_NAME).format(first=first, full=full)
    elif _n_sentences(sentences) < MAX_SENTENCES and rng.random() < 0.4:
        # Anonymous sign-offs read as a sentence of their own, so they count.
        signoff = rng.choice(SIGNOFFS_ANON)
    else:
        signoff = ""
    text = " ".join(sentences + ([signoff] if signoff else []))
    if not MESSAGE_MIN_CHARS <= len(text) <= MESSAGE_MAX_CHARS:
        return None, None
    return text, planted


def _malformed_email(email: str, full_name: str, variant: int) -> str:
    local, domain = email.split("@")
    variants = [
        f"{local}@",  # domain lost
        f"{full_name.lower()}@{domain.split('.')[0]}",  # space in local part, no TLD
        f"{local}.{domain}",  # no @ at all
    ]
    return variants[variant % len(variants)]


def generate(n_rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> tuple[pd.DataFrame, dict]:
    """Build the ticket table and the planted-PII ground truth for ``n_rows`` rows.

    Missing values are NA in the frame and empty fields in the CSV. The second
    element is the content of planted_pii.json.
    """
    if n_rows < 1:
        raise ValueError("n_rows must be at least 1")
    rng = random.Random(seed)
    fake = Faker("en_US")
    fake.seed_instance(seed)

    n_customers = max(1, round(n_rows * 2 / 3))
    customers, customer_names = _make_customers(n_customers, rng, fake)
    # Every customer gets one ticket; the rest go to a heavy-tailed subset so a
    # few customers have many tickets, as in real support queues.
    activity = [min(rng.paretovariate(1.2), 25.0) for _ in customers]
    extra = rng.choices(range(n_customers), weights=activity, k=n_rows - n_customers)
    owners = list(range(n_customers)) + extra
    created = sorted(_created_at(rng) for _ in range(n_rows))
    rng.shuffle(owners)

    src = _PiiSource(rng, fake, seed, customer_names)
    category_pairs = [(c, w) for c, (w, _) in CATEGORIES.items()]
    rows, row_pii = [], []
    for i, (owner, created_at) in enumerate(zip(owners, created, strict=True)):
        cust = customers[owner]
        product = _weighted(rng, PRODUCTS)
        category = _weighted(rng, category_pairs)
        message, planted = None, None
        while message is None:
            message, planted = _message(rng, cust, product, category, src)
        rows.append(
            {
                "ticket_id": f"T-{i + 1:06d}",
                "customer_id": cust["customer_id"],
                "full_name": cust["full_name"],
                "email": cust["email"],
                "phone": cust["phone"],
                "birth_date": cust["birth_date"],
                "postcode": cust["postcode"],
                "city": cust["city"],
                "product": product,
                "channel": _weighted(rng, CHANNELS),
                "rating": rng.choices(range(1, 6), weights=CATEGORIES[category][1], k=1)[0],
                "created_at": created_at,
                "message": message,
            }
        )
        row_pii.append(planted)

    bad_rows = _corrupt(rows, rng)

    truth = {k: set() for k in PII_KEYS}
    for row, planted, owner in zip(rows, row_pii, owners, strict=True):
        cust = customers[owner]
        truth["full_names"].add(cust["full_name"])
        truth["first_names"].add(cust["first"])
        truth["last_names"].add(cust["last"])
        truth["phones"].add(row["phone"])
        if row["email"] == cust["email"]:
            truth["emails"].add(row["email"])
        if row["message"] is not None:
            for key, values in planted.items():
                truth[key].update(values)
    result = {k: sorted(v) for k, v in truth.items()}
    result["bad_rows"] = bad_rows
    return pd.DataFrame(rows, columns=COLUMNS), result


def _corrupt(rows: list[dict], rng: random.Random) -> list[dict]:
    """Damage about 2 % of rows in place and return what was done to which row."""
    n_bad = round(len(rows) * BAD_ROW_FRACTION)
    if n_bad == 0 or len(rows) < 2:
        return []
    targets = sorted(rng.sample(range(1, len(rows)), n_bad))
    kinds = [BAD_KINDS[k % len(BAD_KINDS)] for k in range(n_bad)]
    rng.shuffle(kinds)
    bad_set = set(targets)
    dup_sources: set[int] = set()
    n_malformed = 0
    bad_rows = []
    for i, kind in zip(targets, kinds, strict=True):
        row = rows[i]
        entry = {"row": i, "kind": kind}
        if kind == "missing_email":
            row["email"] = None
            entry["column"] = "email"
        elif kind == "missing_message":
            row["message"] = None
            entry["column"] = "message"
        elif kind == "missing_product":
            row["product"] = None
            entry["column"] = "product"
        elif kind == "malformed_email":
            # Cycling the variants guarantees each shape of breakage is present.
            row["email"] = _malformed_email(row["email"], row["full_name"], n_malformed)
            n_malformed += 1
            entry["column"] = "email"
            entry["value"] = row["email"]
        elif kind == "rating_out_of_range":
            row["rating"] = rng.choice(OUT_OF_RANGE_RATINGS)
            entry["column"] = "rating"
            entry["value"] = row["rating"]
        elif kind == "duplicate_ticket_id":
            # Source is a clean row so each duplicate pair is exactly two rows.
            candidates = [j for j in range(i) if j not in bad_set and j not in dup_sources]
            j = rng.choice(candidates or list(range(i)))
            dup_sources.add(j)
            row["ticket_id"] = rows[j]["ticket_id"]
            entry["column"] = "ticket_id"
            entry["duplicate_of"] = j
        bad_rows.append(entry)
    return bad_rows


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        # mkstemp creates 0600 files; these are meant to be shared and committed.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def to_csv_text(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    # Explicit "\n" keeps the bytes identical across platforms.
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in df.itertuples(index=False, name=None):
        # pandas may hand back None or NaN for a missing string depending on version.
        writer.writerow(["" if _is_missing(v) else v for v in record])
    return buf.getvalue()


def write(df: pd.DataFrame, planted: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "tickets.csv"
    json_path = out_dir / "planted_pii.json"
    _atomic_write(csv_path, to_csv_text(df))
    _atomic_write(json_path, json.dumps(planted, indent=2, ensure_ascii=False) + "\n")
    return csv_path, json_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    df, planted = generate(args.rows, args.seed)
    csv_path, json_path = write(df, planted, args.out_dir)
    n_bad = len(planted["bad_rows"])
    print(f"wrote {len(df)} rows ({n_bad} deliberately bad) to {csv_path} and {json_path}")


if __name__ == "__main__":
    main()
