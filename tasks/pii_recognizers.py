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

from presidio_analyzer import LocalRecognizer, RecognizerResult

from tasks import pii_addresses
from tasks.pii_phones import PHONE_REGIONS, PHONE_START, digits, phone_end

__all__ = ["GATE_ENTITIES", "PATTERNS", "PHONE_REGIONS", "SPECIFIC", "Span", "SpanRecognizer",
           "ValidatedPattern", "digits", "gate_spans", "match_patterns", "pattern_recognizers",
           "pattern_spans"]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    entity: str


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
# Generic domains a URL without a scheme may end in (e-mail addresses take any domain).
_GTLDS = frozenset((
    "com", "org", "net", "edu", "gov", "mil", "int", "info", "biz", "name", "pro", "io", "co", "me",
    "app", "dev", "ai", "online", "site", "xyz", "email", "mail", "shop", "store", "tech", "cloud",
    "live", "blog", "club"
))


# An e-mail address may end in any of the 1,400+ delegated domains, new generic ones (".london",
# ".photography"), internationalized ones (".рф", ".中国") and their punycode ("xn--p1ai"), so
# the domain is not checked against a list (Presidio's EmailRecognizer asks tldextract, which
# fetches the public-suffix list over the network on first use). What "x@y.z" takes that is no
# address is a file name: retina images ("logo@2x.png") and assets.
_TLD = r"(?P<tld>[^\W\d_]{2,63}|xn--[a-z0-9-]{2,59})"
_FILE_EXTENSIONS = frozenset((
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "css", "js", "ts",
    "json", "html", "htm", "xml", "txt", "pdf", "md", "py", "exe", "dll", "so", "jar", "lock",
))


def _tld_ok(tld: str) -> bool:
    return tld.casefold() not in _FILE_EXTENSIONS


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
    # 2221–2720 range), 3x Amex/Diners/JCB, 4 Visa, 6 Discover/Maestro/UnionPay, and the
    # 15-digit JCB ranges 1800 and 2131; only Maestro issues cards as short as 12 digits.
    if not _luhn(number):
        return False
    if len(number) == 12:
        return number.startswith(_MAESTRO)
    if number.startswith(("1800", "2131")):
        return len(number) == 15
    return 13 <= len(number) <= 19 and number[0] in "23456"


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


def _iban_end(m: re.Match, text: str) -> int | None:
    """End offset of the checksum-valid IBAN at the start of the match (spaced groups allowed):
    the registry length of its country, else the whole match (a country or length the table
    does not know still passes or fails the checksum). Presidio's IbanRecognizer also demands
    each country's BBAN format, so a checksum-valid number of another length (Faker's en_GB
    IBANs, 21 characters, are such) stays unscrubbed; for scrubbing, the checksum is enough.
    Written in lower case ("iban de44 5001 …") it is the same number; then only a country the
    registry knows counts, as lower-case words and digits are commoner than upper-case ones."""
    text = m.group().rstrip().upper()
    length = _IBAN_LENGTH.get(text[:2])
    if length is None and not m.group()[:2].isupper():
        return None
    if length is not None:
        ends = [i + 1 for i, c in enumerate(text) if c != " "]
        if len(ends) >= length and _mod97(text[: ends[length - 1]].replace(" ", "")):
            return m.start() + ends[length - 1]
    return m.start() + len(text) if _mod97(text.replace(" ", "")) else None


_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
          r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")


def _date_ok(m: re.Match, text: str) -> bool:
    if m.group("a") is None:
        return True  # a month name or an ISO date: the regex already fixed every field
    a, b = int(m.group("a")), int(m.group("b"))
    return (1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31)


@dataclass(frozen=True)
class ValidatedPattern:
    """A candidate regex and its check. ``validate(match, text)`` says whether the match is the
    entity, or returns where it ends (an IBAN's registry length, a phone's extension); a match
    with a group named ``v…`` reports that group (the number after "DL#"), not its label."""

    entity: str
    regex: re.Pattern
    validate: Callable[[re.Match, str], bool | int | None] | None = None
    strict: bool = True  # checksum-grade: safe to gate on (see ``pattern_spans``)

    def span(self, m: re.Match, text: str) -> tuple[int, int] | None:
        start, end = pii_addresses.value_span(m)
        if self.validate is None:
            return start, end
        ok = self.validate(m, text)
        if ok is None or ok is False:
            return None
        return start, (end if ok is True else ok)


PATTERNS = (
    ValidatedPattern("EMAIL_ADDRESS", re.compile(
        rf"(?<![\w.+'-])[\w.+'-]+@(?:[\w-]+\.)+{_TLD}(?![\w-])"), _email_ok),
    # "john [at] example dot com", "john(at)example(dot)com", "john at example dot com".
    ValidatedPattern("EMAIL_ADDRESS", re.compile(
        rf"(?<![\w.+-])(?P<local>[\w.+-]+)(?P<at>{_AT})(?P<rest>(?:[\w-]+{_DOT})+)"
        rf"{_TLD}(?![\w-])", re.IGNORECASE), _obfuscated_email_ok, strict=False),
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
    ValidatedPattern("IBAN_CODE", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}",
                                             re.IGNORECASE), _iban_end),
    # An "x" may follow the last digit: "555-201-7788x209" (the extension, see phone_end).
    ValidatedPattern("PHONE_NUMBER", re.compile(
        rf"{PHONE_START}(?:\+|00|\(\+?)?\d(?:[\d ()\-/]|\.(?=\d)){{5,22}}\d"
        r"(?!(?!x\d)\w|[.-]\d)"), phone_end, strict=False),
    ValidatedPattern("STREET_ADDRESS", pii_addresses.STREET_ADDRESS, strict=False),
    ValidatedPattern("POSTCODE", pii_addresses.POSTCODE, strict=False),
    ValidatedPattern("DRIVER_LICENSE", pii_addresses.DRIVER_LICENSE,
                     pii_addresses.driver_license_ok, strict=False),
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
# A date, card, IBAN, ZIP+4 or licence number also looks like a phone number; the more
# specific finding wins.
SPECIFIC = frozenset({"CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "DATE_TIME",
                      "EMAIL_ADDRESS", "URL", "STREET_ADDRESS", "POSTCODE", "DRIVER_LICENSE"})
# What the output gate looks for in scrubbed text, whatever the scrubber was told to remove:
# every pattern-found kind that points at one person. Dates and URLs are left to the scrubber's
# configuration (a release date or a product page is no one's), names to NER.
GATE_ENTITIES = frozenset({"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE",
                           "US_SSN", "IP_ADDRESS", "STREET_ADDRESS", "POSTCODE",
                           "DRIVER_LICENSE"})


def match_patterns(text: str, patterns: Iterable[ValidatedPattern]) -> list[Span]:
    spans = []
    for p in patterns:
        pos = 0
        while m := p.regex.search(text, pos):
            span = p.span(m, text)
            if span is None:  # "andrés at jo.doe [at] x.com": retry inside a rejected match
                pos = m.start() + 1
                continue
            spans.append(Span(span[0], span[1], p.entity))
            pos = max(span[1], m.start() + 1)
    return spans


_STRICT = tuple(p for p in PATTERNS if p.strict)


def pattern_spans(text: str) -> list[Span]:
    """Checksum- and pattern-validated PII (email, card, IBAN, SSN), no NER: precise enough to
    run on every output record as a last line of defence without false alarms. Called on the
    recognizers directly, not through an AnalyzerEngine, because it runs on every cell the
    pipeline writes and the engine's per-call bookkeeping would double its cost."""
    return match_patterns(text, _STRICT)


def gate_spans(text: str) -> list[Span]:
    """Every ``GATE_ENTITIES`` finding of the scrubber's own patterns, none switched off: the
    output gate on scrubbed text. A phone-like span inside a more specific finding (a date, a
    URL) is dropped, as the scrubber's phone recognizer yields to it."""
    spans = match_patterns(text, PATTERNS)
    specific = [s for s in spans if s.entity in SPECIFIC]
    return [s for s in spans if s.entity in GATE_ENTITIES and not (
        s.entity == "PHONE_NUMBER"
        and any(o.start < s.end and s.start < o.end for o in specific))]


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
            p = ValidatedPattern(p.entity, p.regex, partial(phone_end, regions=phone_regions),
                                 p.strict)
        if p.entity in wanted:
            by_entity.setdefault(p.entity, []).append(p)
    return [ValidatedPatternRecognizer(e, ps) for e, ps in by_entity.items()]
