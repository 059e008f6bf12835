"""Finding personal data in text: validated patterns, name rules and an offline spaCy NER model for
unknown PII, an index for the identifiers a dataset already holds.

Used by the anonymize stage to scrub and to gate its output, and by generation to filter records.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import phonenumbers

PLACEHOLDERS = {
    "PERSON": "<PERSON>",
    "EMAIL_ADDRESS": "<EMAIL>",
    "PHONE_NUMBER": "<PHONE>",
    "CREDIT_CARD": "<CREDIT_CARD>",
    "IBAN_CODE": "<IBAN>",
    "IP_ADDRESS": "<IP_ADDRESS>",
    "US_SSN": "<SSN>",
    "URL": "<URL>",
    "LOCATION": "<LOCATION>",
    "DATE_TIME": "<DATE>",
}

_WORD = re.compile(r"[^\W_]+")
# Loose on purpose: any run of 7+ digits with common separators may be a phone number.
_PHONE_LIKE = re.compile(r"\+?\(?\d[\d\s().-]{6,}\d")


def placeholder(entity: str) -> str:
    return PLACEHOLDERS.get(entity, f"<{entity}>")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: str


def _words(text: str) -> list[re.Match]:
    return list(_WORD.finditer(text.casefold()))


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


class IdentifierIndex:
    """Known identifier values (names, emails, phones, ids), found in text in linear time.

    A regex alternation of thousands of values is quadratic in practice, so values are indexed as
    tuples of case-folded words and matched against the word n-grams of the text; phone numbers
    are also matched on their last ten digits so a reformatted number is still caught.
    """

    def __init__(self) -> None:
        self._grams: dict[tuple[str, ...], str] = {}
        self._phones: dict[str, str] = {}
        self._lengths: set[int] = set()

    def add(self, value: str, entity: str, *, phone: bool = False) -> None:
        words = tuple(m.group() for m in _words(value))
        # One- or two-letter fragments would match ordinary words; they carry no identity alone.
        if not words or sum(map(len, words)) < 4:
            return
        self._grams[words] = entity
        self._lengths.add(len(words))
        digits = _digits(value)
        if phone and len(digits) >= 7:
            self._phones[digits[-10:]] = entity

    def __len__(self) -> int:
        return len(self._grams)

    def find(self, text: str) -> list[Span]:
        spans = []
        words = _words(text)
        for n in self._lengths:
            for i in range(len(words) - n + 1):
                key = tuple(m.group() for m in words[i : i + n])
                if key in self._grams:
                    spans.append(Span(words[i].start(), words[i + n - 1].end(), self._grams[key]))
        if self._phones:
            for m in _PHONE_LIKE.finditer(text):
                entity = self._phones.get(_digits(m.group())[-10:])
                if entity:
                    spans.append(Span(m.start(), m.end(), entity))
        return spans


def replace_spans(text: str, spans: Iterable[Span]) -> str:
    """Replace spans by placeholders; overlapping spans merge into the longest one's entity."""
    merged: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if merged and s.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, s.end), last.entity)
        else:
            merged.append(s)
    for s in reversed(merged):
        text = text[: s.start] + placeholder(s.entity) + text[s.end :]
    return text


@dataclass(frozen=True)
class RowPattern:
    pattern: re.Pattern
    entities: tuple[str, ...]  # the entity of each named group g0, g1, …


def row_pattern(values: Sequence[tuple[str, str]]) -> RowPattern | None:
    """A pattern for one record's own identifiers, including a name's parts on their own.

    ``values`` are (value, entity) pairs. Names are split so "Thanks, Jane" is caught as well as
    "Jane Doe"; case-insensitive because people write their own names in lower case too.
    """
    alternatives: dict[str, str] = {}
    for value, entity in values:
        value = value.strip()
        if not value:
            continue
        alternatives[re.escape(value)] = entity
        if entity == "PERSON":
            for part in _WORD.findall(value):
                if len(part) >= 3:
                    alternatives[re.escape(part)] = entity
        if entity == "PHONE_NUMBER":
            digits = _digits(value)
            if len(digits) >= 7:
                alternatives[r"[\s().-]*".join(digits[-10:])] = entity
    if not alternatives:
        return None
    ordered = sorted(alternatives, key=len, reverse=True)
    groups = "|".join(f"(?P<g{i}>{alt})" for i, alt in enumerate(ordered))
    pattern = re.compile(rf"(?<![^\W_])(?:{groups})(?![^\W_])", re.IGNORECASE)
    return RowPattern(pattern, tuple(alternatives[a] for a in ordered))


def row_spans(text: str, row: RowPattern | None) -> list[Span]:
    if row is None:
        return []
    return [Span(m.start(), m.end(), row.entities[int(m.lastgroup[1:])])
            for m in row.pattern.finditer(text)]


# ---------------------------------------------------------------------------------------------
# Pattern recognizers: a candidate regex, then a validator (checksum, number plan, context).

# How far before a match a context word ("SSN", "call") may stand, in characters.
_BEFORE = 40
_NOT_AN_ADDRESS = re.compile(r"\b(?:v|version|build|release|firmware|kernel|ver\.?)\s*$|\w/$",
                             re.IGNORECASE)
_GTLDS = frozenset((
    "com", "org", "net", "edu", "gov", "mil", "int", "info", "biz", "name", "pro", "io", "co", "me",
    "app", "dev", "ai", "online", "site", "xyz", "email", "mail", "shop", "store", "tech", "cloud",
    "live", "blog", "club"
))


def _tld_ok(tld: str) -> bool:
    # Two letters are almost always a country domain; longer ones must be a common generic one.
    return len(tld) == 2 or tld.casefold() in _GTLDS


def _email_ok(m: re.Match, text: str) -> bool:
    return _tld_ok(m.group("tld"))


_AT = r"(?:\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*|\s+(?:at|AT|At)\s+|\s*@\s+|\s+@\s*)"
_DOT = r"(?:\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*|\s+(?:dot|DOT|Dot)\s+|\s+\.\s+|\.)"


def _obfuscated_email_ok(m: re.Match, text: str) -> bool:
    # "meet me at home.com" must not count: a bare " at " needs a written-out dot or a local
    # part that looks like an address (dots, digits, underscores).
    at, rest = m.group("at"), m.group("rest")
    plain_at = at.strip().casefold() == "at"
    spelled_dot = bool(re.search(r"dot|\s\.|[\])}>]", rest, re.IGNORECASE))
    looks_local = bool(re.search(r"[._+\d]", m.group("local")))
    return _tld_ok(m.group("tld")) and (not plain_at or spelled_dot or looks_local)


def _ipv4_ok(m: re.Match, text: str) -> bool:
    if _NOT_AN_ADDRESS.search(text[max(0, m.start() - 12) : m.start()]):
        return False
    return all(int(octet) <= 255 for octet in m.group().split("."))


def _ipv6_ok(m: re.Match, text: str) -> bool:
    try:
        ipaddress.IPv6Address(m.group().split("%")[0].rstrip(":") or "-")
    except ValueError:
        return False
    return True


_SSN_CONTEXT = re.compile(r"\b(?:ssn|ss#|social security|soc\.? sec|taxpayer|tin)\b",
                          re.IGNORECASE)


def _ssn_ok(m: re.Match, text: str) -> bool:
    area, group, serial = m.group("area"), m.group("group"), m.group("serial")
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    if len(set(area + group + serial)) == 1:
        return False
    # Nine bare digits are an order number as often as an SSN; they need a word that says so.
    return bool(m.group("sep")) or bool(_SSN_CONTEXT.search(text[max(0, m.start() - _BEFORE)
                                                                  : m.start()]))


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


_MAESTRO = ("5018", "5020", "5038", "56", "57", "58", "6304", "6390", "6759", "676")


def _card_ok(m: re.Match, text: str) -> bool:
    digits = _digits(m.group())
    # Issuer prefixes: 2-series and 5x Mastercard, 3x Amex/Diners/JCB, 4 Visa, 6 Discover/Maestro;
    # only Maestro issues cards as short as 12 digits.
    if len(digits) == 12:
        return digits.startswith(_MAESTRO) and _luhn(digits)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn(digits)


# Length of the IBAN of each country in the SWIFT IBAN registry.
_IBAN_LENGTH = dict(
    AD=24, AE=23, AL=28, AT=20, AZ=28, BA=20, BE=16, BG=22, BH=22, BI=27, BR=29, BY=28, CH=21,
    CR=22, CY=28, CZ=24, DE=22, DJ=27, DK=18, DO=28, EE=20, EG=29, ES=24, FI=18, FK=18, FO=18,
    FR=27, GB=22, GE=22, GI=23, GL=18, GR=27, GT=28, HR=21, HU=28, IE=22, IL=23, IQ=23, IS=26,
    IT=27, JO=30, KW=30, KZ=20, LB=28, LC=32, LI=21, LT=20, LU=20, LV=21, LY=25, MC=27, MD=24,
    ME=22, MK=19, MN=20, MR=27, MT=31, MU=30, NI=28, NL=18, NO=15, OM=23, PK=24, PL=28, PS=29,
    PT=25, QA=29, RO=24, RS=22, RU=33, SA=24, SC=31, SD=18, SE=24, SI=19, SK=24, SM=27, SO=23,
    ST=25, SV=28, TL=23, TN=24, TR=26, UA=29, VA=22, VG=24, XK=20
)


def _mod97(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban_end(m: re.Match) -> int | None:
    """End offset of the checksum-valid IBAN at the start of the match (spaced groups allowed):
    the registry length of its country, else the whole match (a country or length the table
    does not know still passes or fails the checksum)."""
    text = m.group().rstrip()
    length = _IBAN_LENGTH.get(text[:2])
    if length is not None:
        ends = [i + 1 for i, c in enumerate(text) if c != " "]
        if len(ends) >= length and _mod97(text[: ends[length - 1]].replace(" ", "")):
            return m.start() + ends[length - 1]
    return m.start() + len(text) if _mod97(text.replace(" ", "")) else None


_PHONE_CONTEXT = re.compile(r"\b(?:phone|tel|telephone|mobile|cell|call|ring|fax|whats ?app|sms|"
                            r"text|contact|reach|dial|(?:my|her|his|your|their|our|new|callback) "
                            r"number)\b[^\n]{0,50}$", re.IGNORECASE)
# National numbers are tried against these number plans; international ones carry their own.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "PL", "SE", "DK",
                 "NO", "FI", "IE", "PT", "CZ", "TR", "IN", "BR", "MX", "AU", "NZ", "CA", "JP",
                 "CN", "ZA", "NG", "SG")


def _phone_ok(m: re.Match, text: str, regions: Sequence[str] = PHONE_REGIONS) -> bool:
    raw = m.group()
    digits = _digits(raw)
    if not 7 <= len(digits) <= 15:
        return False
    groups = [g for g in re.split(r"[^\d]+", raw) if g]
    context = bool(_PHONE_CONTEXT.search(text[max(0, m.start() - 60) : m.start()]))
    if raw.startswith(("+", "(+", "00")):
        try:  # the library reads "+33 (0)5 …" and "(+33) 6 …" itself
            number = phonenumbers.parse("+" + raw[2:] if raw.startswith("00") else raw, None)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_possible_number(number)
    if "." in raw and min(map(len, re.split(r"[^\d]+", raw.split(".", 1)[1]))) < 2:
        return False  # 10.0.19045 is a version, not 100 190 45
    # A bare digit run is an order number until a word says otherwise or it starts with the
    # trunk prefix 0 most countries dial; a formatted one needs the length or the grouping of a
    # real number plan (2005-2024 is a range of years).
    if len(groups) == 1 and not (context or (raw[0] == "0" and 10 <= len(digits) <= 11)):
        return False
    if not (context or len(digits) >= 9 or len(groups) >= 3):
        return False
    for region in regions:
        try:
            if phonenumbers.is_possible_number(phonenumbers.parse(raw, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")


def _date_ok(m: re.Match, text: str) -> bool:
    if m.group("a") is None:
        return True  # a month name or an ISO date: the regex already fixed every field
    a, b = int(m.group("a")), int(m.group("b"))
    return (1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31)


@dataclass(frozen=True)
class PatternRecognizer:
    entity: str
    regex: re.Pattern
    validate: Callable[[re.Match, str], bool] | None = None
    strict: bool = True  # checksum-grade: safe to gate on (see ``pattern_spans``)


RECOGNIZERS = (
    PatternRecognizer("EMAIL_ADDRESS", re.compile(
        r"(?<![\w.+'-])[\w.+'-]+@(?:[\w-]+\.)+(?P<tld>[A-Za-z]{2,24})(?![\w-])"), _email_ok),
    # "john [at] example dot com", "john(at)example(dot)com", "john at example dot com".
    PatternRecognizer("EMAIL_ADDRESS", re.compile(
        rf"(?<![\w.+-])(?P<local>[\w.+-]+)(?P<at>{_AT})(?P<rest>(?:[\w-]+{_DOT})+)"
        r"(?P<tld>[A-Za-z]{2,24})(?![\w-])", re.IGNORECASE), _obfuscated_email_ok, strict=False),
    PatternRecognizer("URL", re.compile(
        r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]"
        rf"|\b(?:[\w-]+\.)+(?:{'|'.join(sorted(_GTLDS))}|[a-z]{{2}})/[^\s<>\"']*[\w/]",
        re.IGNORECASE), strict=False),
    PatternRecognizer("IP_ADDRESS", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d|\w)"),
                      _ipv4_ok, strict=False),
    PatternRecognizer("IP_ADDRESS", re.compile(
        r"(?<![\w:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{3,39}(?:%\w+)?(?!\w)"), _ipv6_ok,
        strict=False),
    PatternRecognizer("US_SSN", re.compile(
        r"(?<![\w-])(?P<area>\d{3})(?P<sep>[- ]?)(?P<group>\d{2})(?P=sep)(?P<serial>\d{4})"
        r"(?![\d]|[- ]\d)"), _ssn_ok),
    PatternRecognizer("CREDIT_CARD", re.compile(r"(?<![\w+-])\d(?:[ -]?\d){11,18}(?![\d-])"),
                      _card_ok),
    PatternRecognizer("IBAN_CODE", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}")),
    PatternRecognizer("PHONE_NUMBER", re.compile(
        r"(?<![\w+./-])(?:\+|00|\(\+?)?\d(?:[\d ()\-/]|\.(?=\d)){5,22}\d(?!\w|[.-]\d)"), _phone_ok,
        strict=False),
    PatternRecognizer("DATE_TIME", re.compile(
        r"\b(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b"
        r"|(?<![\d.])(?P<a>\d{1,2})(?P<s>[./-])(?P<b>\d{1,2})(?P=s)(?:(?:19|20)\d\d|(?<=/)\d\d)"
        r"(?!\.?\d)"
        rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+(?:19|20)\d\d\b"
        rf"|\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d\d\b"), _date_ok,
        strict=False),
)
# A date, card or IBAN also looks like a phone number; the more specific finding wins.
_SPECIFIC = frozenset({"CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "DATE_TIME",
                       "EMAIL_ADDRESS", "URL"})


def _pattern_matches(text: str, recognizers: Iterable[PatternRecognizer]) -> list[Span]:
    spans = []
    for r in recognizers:
        pos = 0
        while m := r.regex.search(text, pos):
            end = _iban_end(m) if r.entity == "IBAN_CODE" else (
                m.end() if r.validate is None or r.validate(m, text) else None)
            if end is None:  # "andrés at jo.doe [at] x.com": retry inside a rejected match
                pos = m.start() + 1
                continue
            spans.append(Span(m.start(), end, r.entity))
            pos = end
    specific = [s for s in spans if s.entity in _SPECIFIC]
    return [s for s in spans if s.entity != "PHONE_NUMBER"
            or not any(o.start < s.end and s.start < o.end for o in specific)]


def pattern_spans(text: str) -> list[Span]:
    """Checksum- and pattern-validated PII (email, card, IBAN, SSN), no NER: precise enough to
    run on every output record as a last line of defence without false alarms."""
    return _pattern_matches(text, (r for r in RECOGNIZERS if r.strict))


# ---------------------------------------------------------------------------------------------
# Person names by rule: given-name gazetteer, titles and cue words. spaCy's small English model
# misses many names in short informal text ("my wife Amber Grimes", "ask for jimmy").

_TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_PARTICLES = frozenset((
    "de", "da", "del", "della", "di", "du", "dos", "das", "van", "von", "der", "den", "ter", "ten",
    "le", "la", "al", "bin", "ben", "y"
))
_TITLES = frozenset((
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "herr", "frau", "mme", "mlle", "sr",
    "sra", "srta", "sig", "dott", "madam"
))
# After these, a known given name is a name even alone or in lower case ("my wife amber").
_CUE = re.compile(
    r"(?:\b(?:wife|husband|partner|son|daughter|brother|sister|mother|father|mom|mum|dad|"
    r"friend|colleague|co-?worker|neighbou?r|manager|boss|named|called|i'?m|i am|this is|"
    r"it'?s|dear|hi|hello|hey|thanks|thank you|regards|cheers|best|sincerely|signed|ask for|"
    r"speak to|talk to|contact|patient|customer|client|employee|cardholder|caller|owner|attn|"
    r"name is|name|reach)[\s,:]+|\b(?:mr|mrs|ms|dr|prof)\.?\s+)$", re.IGNORECASE)
# After these, a known given name in capitals is a name even alone ("a gift from Grace").
_WEAK_CUE = re.compile(r"\b(?:from|to|cc|with|for|by|and)\s+$", re.IGNORECASE)
# After these, any capitalized run is a name: they introduce a person, never a thing.
_STRONG_CUE = re.compile(
    r"(?:\b(?:named|i'?m|i am|my name is|name is|name as|name|dear|signed|sincerely|regards|attn|"
    r"patient|cardholder|employee|customer|client|caller|ask for|speak to|contact:|kontakt:|"
    r"(?:signed|sent|submitted|approved|requested|reported|written|created|assigned|opened|"
    r"entered|completed) by)[\s,:]+|\b(?:mr|mrs|ms|miss|mx|dr|prof|herr|frau|mme|mlle|sr|sra)"
    r"\.?\s+)$", re.IGNORECASE)


@cache
def _stop_words() -> frozenset[str]:
    """Words that are never a name token, even when capitalized: function words, greetings,
    calendar words and the nouns that follow "Dear"."""
    from spacy.lang.en.stop_words import STOP_WORDS

    extra = (
        "hi", "hello", "hey", "dear", "thanks", "thank", "regards", "cheers", "best", "kind",
        "sincerely", "yes", "no", "ok", "okay", "please", "sir", "madam", "team", "support",
        "customer", "client", "service", "sales", "all", "everyone", "monday", "tuesday",
        "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march",
        "april", "may", "june", "july", "august", "september", "october", "november", "december",
        "today", "tomorrow", "name", "subject", "re", "fw", "fwd", "date", "phone", "mobile",
        "email", "tel", "mail", "address", "city", "dob", "ssn", "iban", "bic", "card", "account",
        "order", "invoice", "ticket", "patient", "employee", "meeting", "notes", "customer",
        "contact", "emergency", "shipping", "bank", "details", "transfer", "wire", "new", "reply"
    )
    return frozenset(STOP_WORDS) | frozenset(extra) | _TITLES


GAZETTEER_LOCALES = ("en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "de_DE", "de_AT", "de_CH",
                     "fr_FR", "fr_CA", "es_ES", "es_MX", "es_AR", "pt_BR", "pt_PT", "it_IT",
                     "nl_NL", "nl_BE", "pl_PL", "cs_CZ", "sk_SK", "sv_SE", "da_DK", "no_NO",
                     "fi_FI", "ro_RO", "hu_HU", "hr_HR", "tr_TR")


def _faker_names(attrs: tuple[str, ...]) -> frozenset[str]:
    names: set[str] = set()
    for locale in GAZETTEER_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in attrs:
            values = getattr(provider, attr, ())
            if not isinstance(values, property):
                names.update(values)
    return frozenset(n.casefold() for n in names if len(n) >= 3)


@cache
def first_names() -> frozenset[str]:
    """Case-folded given names from Faker's census-derived lists for 29 locales, a public
    gazetteer."""
    return _faker_names(("first_names", "first_names_male", "first_names_female"))


@cache
def last_names() -> frozenset[str]:
    return _faker_names(("last_names",))


def _capitalized(token: str) -> bool:
    return token[0].isupper() and token.casefold() not in _stop_words()


def _continues_name(m: re.Match, caps: bool) -> bool:
    """Whether a word can continue a name: capitalized, no function word, not glued to a digit
    ("Aurora X2"), and in capitals only inside a name in capitals ("Watkins VPN" ends before
    the acronym)."""
    word = m.group()
    return (_capitalized(word) and not m.string[m.end() : m.end() + 1].isdigit()
            and (caps or len(word) == 1 or not word.isupper()))


def _name_end(tokens: list[re.Match], i: int) -> int:
    """Index of the last word of the name starting at ``tokens[i]``: capitalized words (and
    particles before one, "van der Sloot") on the same line, four at most."""
    text, caps = tokens[i].string, len(tokens[i].group()) > 1 and tokens[i].group().isupper()
    j = i
    while j + 1 < len(tokens) and j - i < 3:
        if text[tokens[j].end() : tokens[j + 1].start()] not in (" ", "-"):
            break
        if _continues_name(tokens[j + 1], caps):
            j += 1
        elif (tokens[j + 1].group() in _PARTICLES and j + 2 < len(tokens)
              and text[tokens[j + 1].end() : tokens[j + 2].start()] == " "
              and _continues_name(tokens[j + 2], caps)):
            j += 2
        else:
            break
    return j


def name_spans(text: str) -> list[Span]:
    """Names found by rule: a given name followed by capitalized words, a given name or a
    capitalized run after a cue ("Dr.", "my wife", "name:"), "Doe, Jane" and lower-case
    "jane doe" after a cue."""
    tokens = list(_TOKEN.finditer(text))
    given, family, stop = first_names(), last_names(), _stop_words()
    spans: list[Span] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        word, folded = tok.group(), tok.group().casefold()
        before = text[max(0, tok.start() - 30) : tok.start()]
        if word[0].isupper() and folded not in stop:
            j = _name_end(tokens, i)
            if (folded in given and (j > i or _CUE.search(before) or _WEAK_CUE.search(before))) \
                    or _STRONG_CUE.search(before):
                spans.append(Span(tok.start(), tokens[j].end(), "PERSON"))
                i = j + 1
                continue
            prev = tokens[i - 1] if i else None
            if (folded in given and prev and text[prev.end() : tok.start()] == ", "
                    and _capitalized(prev.group())):
                spans.append(Span(prev.start(), tok.end(), "PERSON"))  # "Doe, Jane"
            elif j > i and tokens[j].group().casefold() in family:
                spans.append(Span(tok.start(), tokens[j].end(), "PERSON"))  # "Wei Zhang"
                i = j + 1
                continue
        elif word.islower() and folded in given and folded not in stop and _CUE.search(before):
            end = i
            if (i + 1 < len(tokens) and text[tok.end() : tokens[i + 1].start()] == " "
                    and tokens[i + 1].group().casefold() in family
                    and tokens[i + 1].group().casefold() not in stop):
                end = i + 1
            spans.append(Span(tok.start(), tokens[end].end(), "PERSON"))
            i = end + 1
            continue
        i += 1
    return spans


def _run_start(tokens: list[re.Match], j: int, caps: bool) -> int:
    """Index of the first word of the capitalized run that ends at ``tokens[j]``."""
    i = j
    while i > 0 and j - i < 3 and tokens[i].string[tokens[i - 1].end() : tokens[i].start()] \
            == " " and _continues_name(tokens[i - 1], caps):
        i -= 1
    return i


def complete_names(text: str, spans: list[Span]) -> list[Span]:
    """Widen person spans to the whole capitalized name (the model often tags only the part
    it knows: "Mekdes [Tesfaye]"), and take the other name of a pair ("X Y and <PERSON>")."""
    tokens = list(_TOKEN.finditer(text))
    out, people = [], set()
    for s in spans:
        inside = [k for k, t in enumerate(tokens) if s.start <= t.start() and t.end() <= s.end]
        if s.entity != "PERSON" or not inside:
            out.append(s)
            continue
        caps = text[s.start : s.end].isupper()
        people.add((_run_start(tokens, inside[0], caps), _name_end(tokens, inside[-1])))
    for first, last in list(people):
        caps = text[tokens[first].start() : tokens[last].end()].isupper()
        if (first >= 2 and tokens[first - 1].group().casefold() in ("and", "or")
                and _continues_name(tokens[first - 2], caps)):
            people.add((_run_start(tokens, first - 2, caps), first - 2))
        if (last + 2 < len(tokens) and tokens[last + 1].group().casefold() in ("and", "or")
                and _continues_name(tokens[last + 2], caps)):
            people.add((last + 2, _name_end(tokens, last + 2)))
    return out + [Span(tokens[a].start(), tokens[b].end(), "PERSON") for a, b in sorted(people)]


# ---------------------------------------------------------------------------------------------
# Named-entity model: spaCy offline, NER component only, only on texts that still need it.

_NER_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION",
               "FAC": "LOCATION"}


@cache
def ner_pipeline(model: str):
    """A locally installed spaCy pipeline with only its NER component; never downloads."""
    import spacy

    from tasks.errors import ConfigError

    if not spacy.util.is_package(model):
        raise ConfigError(
            f"anonymize.ner_model: spaCy pipeline {model!r} is not installed; install it as a "
            "package (privgen never downloads models) or set anonymize.ner_model"
        )
    nlp = spacy.load(model)
    if "ner" not in nlp.pipe_names:
        raise ConfigError(f"anonymize.ner_model: spaCy pipeline {model!r} has no NER component")
    # NER in the small English pipelines carries its own token embedding, so tagger, parser and
    # lemmatizer can go: about twice the speed and the same entities.
    listeners = getattr(nlp.get_pipe("tok2vec"), "listening_components", ()) \
        if "tok2vec" in nlp.pipe_names else ()
    nlp.select_pipes(enable=["ner", *(["tok2vec"] if "ner" in listeners else [])])
    return nlp


def _needs_ner(text: str, found: list[Span], known: frozenset[str] = frozenset()) -> bool:
    """Whether a capitalized word remains that is no function word, no word of an allowed
    value and not already found: texts without one hold no name or place the model could add."""
    ignore = _stop_words() | known
    for tok in _TOKEN.finditer(text):
        word = tok.group()
        if word[0].isupper() and word.casefold() not in ignore and not any(
                s.start <= tok.start() and tok.end() <= s.end for s in found):
            return True
    return False


def find_pii(
    texts: Sequence[str], *, ner_model: str, entities: Sequence[str],
    custom_patterns: Sequence[tuple[str, str]] = (), allow: Iterable[str] = (),
    phone_regions: Sequence[str] = PHONE_REGIONS, batch_size: int = 256,
) -> list[list[Span]]:
    """PII spans per text: validated patterns, name rules, then spaCy NER batched through
    ``nlp.pipe`` on the texts where a capitalized word is still unexplained. Spans whose text
    is in ``allow`` (case-insensitive) are not PII."""
    wanted = set(entities) | {e for e, _ in custom_patterns}
    recognizers = [r for r in RECOGNIZERS if r.entity in wanted]
    if tuple(phone_regions) != PHONE_REGIONS:
        recognizers = [PatternRecognizer(r.entity, r.regex,
                                         lambda m, t: _phone_ok(m, t, phone_regions))
                       if r.entity == "PHONE_NUMBER" else r for r in recognizers]
    recognizers += [PatternRecognizer(e, re.compile(rx)) for e, rx in custom_patterns]
    use_names = "PERSON" in wanted
    use_ner = bool(wanted & set(_NER_LABELS.values()))
    allowed = {a.casefold() for a in allow}

    found = []
    for text in texts:
        spans = _pattern_matches(text, recognizers)
        if use_names:
            spans += name_spans(text)
        found.append(spans)
    if use_ner:
        known = frozenset(w.casefold() for a in allowed for w in _TOKEN.findall(a))
        todo = [i for i, text in enumerate(texts) if _needs_ner(text, found[i], known)]
        nlp = ner_pipeline(ner_model)
        for i, doc in zip(todo, nlp.pipe((texts[i] for i in todo), batch_size=batch_size),
                          strict=True):
            # Names and places hold no digits; nor is a run of function words ("Tel.") a name.
            found[i] += [Span(e.start_char, e.end_char, _NER_LABELS[e.label_]) for e in doc.ents
                         if _NER_LABELS.get(e.label_) in wanted
                         and not any(c.isdigit() for c in e.text)
                         and any(_capitalized(t.text) for t in e)]
    if use_names:
        found = [complete_names(text, spans) for text, spans in zip(texts, found, strict=True)]
    return [[s for s in spans if s.entity in wanted
             and texts[i][s.start : s.end].casefold() not in allowed]
            for i, spans in enumerate(found)]
