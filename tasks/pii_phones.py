"""Phone numbers in free text: where one may start (glued to "tel", "mobile"), its extension,
and the check that reads it against number plans (phonenumbers) and the words before it.
Used by ``tasks.pii_recognizers``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import phonenumbers


def digits(text: str) -> str:
    return re.sub(r"\D", "", text)


_PHONE_CONTEXT = re.compile(r"\b(?:phone|tel|telephone|mobile|mob|cell|call|ring|fax|whats ?app|"
                            r"sms|text|contact|reach|dial|ph|landline|hotline|voicemail|tlf|"
                            r"telefon|(?:my|her|his|your|their|our|new|callback|phone) "
                            r"(?:number|no))\b[^\n]{0,50}$", re.IGNORECASE)
# Words a number is written glued to ("tel415-555-0129", "mobile07700900777",
# "whatsapp+4915112345678", "Tel.+49 …"): the match may start right after them.
_GLUED_TO = ("tel", "phone", "mobile", "mob", "cell", "fax", "ph", "whatsapp", "tlf", "telefon",
             "call", "sms", "tel. no", "phone no")
PHONE_START = "(?=[\\d+(])(?:(?<![\\w+./-])|" + "|".join(
    f"(?<=(?i:{re.escape(w + end)}))" for w in _GLUED_TO for end in ("", ".", ":")) + ")"
# An extension after the number: "x209", "ext. 31", "ext 4", "extension 12", "#12".
_EXTENSION = re.compile(r"\s{0,2},?\s{0,2}(?:x|ext\.?|extn\.?|extension|#)\s{0,2}:?\s{0,2}"
                        r"\d{1,6}(?!\w)", re.IGNORECASE)
# National numbers are tried against these number plans; international ones carry their own.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "PL", "SE", "DK",
                 "NO", "FI", "IE", "PT", "CZ", "TR", "IN", "BR", "MX", "AU", "NZ", "CA", "JP",
                 "CN", "ZA", "NG", "SG")


def phone_end(m: re.Match, text: str, regions: Sequence[str] = PHONE_REGIONS) -> int | None:
    """End of the phone number at ``m`` with its extension, or None when it is no number."""
    if not _phone_ok(m, text, regions):
        return None
    ext = _EXTENSION.match(text, m.end())
    return ext.end() if ext else m.end()


def without_extension(number: str) -> str:
    """``number`` less a trailing extension: "555-201-7788 x209" → "555-201-7788"."""
    ext = re.search(_EXTENSION.pattern + r"\s*$", number, re.IGNORECASE)
    return number[: ext.start()] if ext else number


def _international(raw: str) -> bool:
    try:  # the library reads "+33 (0)5 …" and "(+33) 6 …" itself
        return phonenumbers.is_possible_number(phonenumbers.parse(raw, None))
    except phonenumbers.NumberParseException:
        return False


def _phone_ok(m: re.Match, text: str, regions: Sequence[str] = PHONE_REGIONS) -> bool:
    # Presidio's PhoneRecognizer runs phonenumbers' matcher for a handful of regions and needs
    # a context word to score above its threshold; this one tries many number plans and reads
    # the context itself.
    raw = m.group()
    number = digits(raw)
    context = bool(_PHONE_CONTEXT.search(text[max(0, m.start() - 60) : m.start()]))
    if raw.startswith(("+", "(+")):
        return _international(raw)
    if raw.startswith("00"):
        # After "phone", a number dialled abroad that the plan calls too short is still one.
        return _international("+" + raw[2:]) or (context and 9 <= len(number) <= 17)
    # 011 is how North America dials abroad ("011 44 20 7946 0958"); no national number there
    # starts with 0 or 1.
    if raw.startswith("011") and len(number) >= 12 and _international("+" + number[3:]):
        return True
    if not 7 <= len(number) <= 15:
        return False
    groups = [g for g in re.split(r"[^\d]+", raw) if g]
    if "." in raw and min(map(len, re.split(r"[^\d]+", raw.split(".", 1)[1]))) < 2:
        return False  # 10.0.19045 is a version, not 100 190 45
    # A bare digit run is an order number until a word says otherwise or it starts with the
    # trunk prefix 0 most countries dial; a formatted one needs the length or the grouping of a
    # real number plan (2005-2024 is a range of years).
    if len(groups) == 1 and not (context or (raw[0] == "0" and 10 <= len(number) <= 11)
                                 or _nanp(number)):
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


def _nanp(number: str) -> bool:
    """Ten digits (or 1 and ten) that the North American plan assigns: an area code and an
    exchange in service, which a random order number mostly is not."""
    if len(number) == 11 and number[0] == "1":
        number = number[1:]
    if len(number) != 10:
        return False
    return phonenumbers.is_valid_number(phonenumbers.parse(number, "US"))
