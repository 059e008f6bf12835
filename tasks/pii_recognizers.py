"""Presidio recognizers for PII with a shape: a candidate regex, then a check that reads the match
and the words before it (checksum, number plan, context). Written for privgen because Presidio's
predefined recognizers miss what the comments below name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import phonenumbers
from presidio_analyzer import LocalRecognizer, RecognizerResult


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: str


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


class SpanRecognizer(LocalRecognizer):
    """A Presidio recognizer over privgen's span finders. ``entities`` is what it may report; a
    subclass's ``find(text)`` finds them; ``yields_to`` names entities whose overlapping finding
    wins over this one's (a card or a date also looks like a phone number)."""

    def __init__(self, entities: Iterable[str], name: str, score: float = 1.0,
                 yields_to: Iterable[str] = ()) -> None:
        self.score = score
        self.yields_to = frozenset(yields_to)
        super().__init__(supported_entities=list(entities), name=name)

    def load(self) -> None:
        pass

    def find(self, text: str) -> list[Span]:
        raise NotImplementedError

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None) -> list[RecognizerResult]:
        return [RecognizerResult(s.entity, s.start, s.end, self.score) for s in self.find(text)]

    def enhance_using_context(self, text, raw_recognizer_results, other_raw_recognizer_results,
                              nlp_artifacts, context=None) -> list[RecognizerResult]:
        # Presidio hands each recognizer the other recognizers' results here, "to allow related
        # entities context enhancement"; privgen uses it to give way to a more specific finding.
        if not self.yields_to:
            return raw_recognizer_results
        others = [o for o in other_raw_recognizer_results if o.entity_type in self.yields_to]
        return [r for r in raw_recognizer_results
                if not any(o.start < r.end and r.start < o.end for o in others)]


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
    # Presidio's EmailRecognizer asks tldextract instead, which fetches the public-suffix list
    # over the network on first use.
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
    # Presidio's IpRecognizer takes "firmware 1.2.3.4" for an address.
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
    # Presidio's UsSsnRecognizer scores "SSN: 536221234" and "ticket 536221234" alike (0.05):
    # a validate_result sees only the match, never the words before it.
    return bool(m.group("sep")) or bool(_SSN_CONTEXT.search(text[max(0, m.start() - _BEFORE)
                                                                  : m.start()]))


def _luhn(number: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(number)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


_MAESTRO = ("5018", "5020", "5038", "56", "57", "58", "6304", "6390", "6759", "676")


def _card_ok(m: re.Match, text: str) -> bool:
    number = digits(m.group())
    # Issuer prefixes: 2-series and 5x Mastercard (Presidio's CreditCardRecognizer misses the
    # 2221–2720 range), 3x Amex/Diners/JCB, 4 Visa, 6 Discover/Maestro; only Maestro issues
    # cards as short as 12 digits.
    if len(number) == 12:
        return number.startswith(_MAESTRO) and _luhn(number)
    return 13 <= len(number) <= 19 and number[0] in "23456" and _luhn(number)


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
    does not know still passes or fails the checksum). Presidio's IbanRecognizer also demands
    each country's BBAN format, so a checksum-valid number of another length (Faker's en_GB
    IBANs, 21 characters, are such) stays unscrubbed; for scrubbing, the checksum is enough."""
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
    # Presidio's PhoneRecognizer runs phonenumbers' matcher for a handful of regions and needs
    # a context word to score above its threshold; this one tries many number plans and reads
    # the context itself.
    raw = m.group()
    number = digits(raw)
    if not 7 <= len(number) <= 15:
        return False
    groups = [g for g in re.split(r"[^\d]+", raw) if g]
    context = bool(_PHONE_CONTEXT.search(text[max(0, m.start() - 60) : m.start()]))
    if raw.startswith(("+", "(+", "00")):
        try:  # the library reads "+33 (0)5 …" and "(+33) 6 …" itself
            parsed = phonenumbers.parse("+" + raw[2:] if raw.startswith("00") else raw, None)
        except phonenumbers.NumberParseException:
            return False
        return phonenumbers.is_possible_number(parsed)
    if "." in raw and min(map(len, re.split(r"[^\d]+", raw.split(".", 1)[1]))) < 2:
        return False  # 10.0.19045 is a version, not 100 190 45
    # A bare digit run is an order number until a word says otherwise or it starts with the
    # trunk prefix 0 most countries dial; a formatted one needs the length or the grouping of a
    # real number plan (2005-2024 is a range of years).
    if len(groups) == 1 and not (context or (raw[0] == "0" and 10 <= len(number) <= 11)):
        return False
    if not (context or len(number) >= 9 or len(groups) >= 3):
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
class ValidatedPattern:
    entity: str
    regex: re.Pattern
    validate: Callable[[re.Match, str], bool] | None = None
    strict: bool = True  # checksum-grade: safe to gate on (see ``pattern_spans``)


PATTERNS = (
    ValidatedPattern("EMAIL_ADDRESS", re.compile(
        r"(?<![\w.+'-])[\w.+'-]+@(?:[\w-]+\.)+(?P<tld>[A-Za-z]{2,24})(?![\w-])"), _email_ok),
    # "john [at] example dot com", "john(at)example(dot)com", "john at example dot com".
    ValidatedPattern("EMAIL_ADDRESS", re.compile(
        rf"(?<![\w.+-])(?P<local>[\w.+-]+)(?P<at>{_AT})(?P<rest>(?:[\w-]+{_DOT})+)"
        r"(?P<tld>[A-Za-z]{2,24})(?![\w-])", re.IGNORECASE), _obfuscated_email_ok, strict=False),
    # A scheme, "www." or a path: Presidio's UrlRecognizer also takes bare domains ("met at
    # home.com") and the halves of an e-mail address ("jane.do", "mail.de").
    ValidatedPattern("URL", re.compile(
        r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"']+[^\s<>\"'.,;:!?)\]]"
        rf"|\b(?:[\w-]+\.)+(?:{'|'.join(sorted(_GTLDS))}|[a-z]{{2}})/[^\s<>\"']*[\w/]",
        re.IGNORECASE), strict=False),
    ValidatedPattern("IP_ADDRESS", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d|\w)"),
                     _ipv4_ok, strict=False),
    ValidatedPattern("IP_ADDRESS", re.compile(
        r"(?<![\w:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{3,39}(?:%\w+)?(?!\w)"), _ipv6_ok,
        strict=False),
    ValidatedPattern("US_SSN", re.compile(
        r"(?<![\w-])(?P<area>\d{3})(?P<sep>[- ]?)(?P<group>\d{2})(?P=sep)(?P<serial>\d{4})"
        r"(?![\d]|[- ]\d)"), _ssn_ok),
    ValidatedPattern("CREDIT_CARD", re.compile(r"(?<![\w+-])\d(?:[ -]?\d){11,18}(?![\d-])"),
                     _card_ok),
    ValidatedPattern("IBAN_CODE", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}")),
    ValidatedPattern("PHONE_NUMBER", re.compile(
        r"(?<![\w+./-])(?:\+|00|\(\+?)?\d(?:[\d ()\-/]|\.(?=\d)){5,22}\d(?!\w|[.-]\d)"), _phone_ok,
        strict=False),
    # Calendar dates only ("4 April 1985", "02/04/85"): Presidio's DateRecognizer also takes
    # times and bare years, which are no personal data.
    ValidatedPattern("DATE_TIME", re.compile(
        r"\b(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b"
        r"|(?<![\d.])(?P<a>\d{1,2})(?P<s>[./-])(?P<b>\d{1,2})(?P=s)(?:(?:19|20)\d\d|(?<=/)\d\d)"
        r"(?!\.?\d)"
        rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\.?,?\s+(?:19|20)\d\d\b"
        rf"|\b{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d\d\b"), _date_ok,
        strict=False),
)
# A date, card or IBAN also looks like a phone number; the more specific finding wins.
SPECIFIC = frozenset({"CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "DATE_TIME",
                      "EMAIL_ADDRESS", "URL"})


def match_patterns(text: str, patterns: Iterable[ValidatedPattern]) -> list[Span]:
    spans = []
    for p in patterns:
        pos = 0
        while m := p.regex.search(text, pos):
            end = _iban_end(m) if p.entity == "IBAN_CODE" else (
                m.end() if p.validate is None or p.validate(m, text) else None)
            if end is None:  # "andrés at jo.doe [at] x.com": retry inside a rejected match
                pos = m.start() + 1
                continue
            spans.append(Span(m.start(), end, p.entity))
            pos = end
    return spans


_STRICT = tuple(p for p in PATTERNS if p.strict)


def pattern_spans(text: str) -> list[Span]:
    """Checksum- and pattern-validated PII (email, card, IBAN, SSN), no NER: precise enough to
    run on every output record as a last line of defence without false alarms. Called on the
    recognizers directly, not through an AnalyzerEngine, because it runs on every cell the
    pipeline writes and the engine's per-call bookkeeping would double its cost."""
    return match_patterns(text, _STRICT)


class ValidatedPatternRecognizer(SpanRecognizer):
    """One entity's validated patterns as a Presidio recognizer."""

    def __init__(self, entity: str, patterns: Sequence[ValidatedPattern]) -> None:
        self.patterns = tuple(patterns)
        super().__init__([entity], name=f"privgen_{entity.lower()}",
                         yields_to=SPECIFIC if entity == "PHONE_NUMBER" else ())

    def find(self, text: str) -> list[Span]:
        return match_patterns(text, self.patterns)


def pattern_recognizers(entities: Iterable[str], phone_regions: Sequence[str] = PHONE_REGIONS
                        ) -> list[ValidatedPatternRecognizer]:
    """A recognizer per wanted entity that privgen has patterns for."""
    wanted = set(entities)
    by_entity: dict[str, list[ValidatedPattern]] = {}
    for p in PATTERNS:
        if p.entity == "PHONE_NUMBER" and tuple(phone_regions) != PHONE_REGIONS:
            p = ValidatedPattern(p.entity, p.regex, partial(_phone_ok, regions=phone_regions),
                                 p.strict)
        if p.entity in wanted:
            by_entity.setdefault(p.entity, []).append(p)
    return [ValidatedPatternRecognizer(e, ps) for e, ps in by_entity.items()]
