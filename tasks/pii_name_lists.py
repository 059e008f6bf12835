"""Word lists and word shapes behind the name rules: given and family names, everyday English
words, function words, and the morphology of surnames (patronymics, particles, Mc/O')."""

from __future__ import annotations

import importlib
import re
from functools import cache

# Name particles written in lower case inside a name ("van der Berg", "de la Cruz", "bin Abdullah").
PARTICLES = frozenset((
    "de", "da", "del", "della", "dei", "di", "du", "dos", "das", "do", "van", "von", "der", "den",
    "ter", "ten", "te", "le", "la", "lo", "al", "el", "bin", "binti", "bint", "ibn", "ben", "bat",
    "y", "e", "zu", "af", "av", "op", "st"
))
TITLES = frozenset((
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "herr", "frau", "mme", "mlle", "sr",
    "sra", "srta", "sig", "dott", "madam", "rev", "fr", "capt", "sgt", "lt", "col", "hon", "dame",
    "lord", "lady", "mag", "ing", "pan", "pani", "sensei"
))
# Chat words that are no name and no everyday word in wordfreq's sense, yet open many messages.
_CHAT = ("thx", "pls", "plz", "lol", "omg", "btw", "ur", "ya", "yah", "yeah", "yep", "yup", "nope",
         "haha", "hahaha", "hehe", "xoxo", "xx", "xxx", "ty", "np", "idk", "imo", "tbh", "asap",
         "fyi", "brb", "gr8", "kk", "hun", "babe", "bro", "dude", "mate", "guys", "eew", "ew",
         "ugh",
         "hmm", "hmmm", "wow", "aww", "oops", "yay", "meh", "nah", "lmao", "rofl", "tho", "cuz",
         "wanna", "gonna", "gotta", "dunno", "luv", "txt", "msg", "pic", "pics", "tmr", "tmrw",
         "2day", "2moro", "ok", "okay", "okey", "k", "oh", "ah", "hi", "hey", "yo", "sup", "pm",
         "am", "ps", "cc", "bcc", "re", "fw", "fwd", "aka", "etc", "vs", "ca", "approx")
# Endings of family names and patronymics across languages: Icelandic -dóttir/-sson, Slavic
# -ová/-ski/-wicz/-enko/-ovich, Romanian -escu, Greek -opoulos/-akis, Armenian -yan/-ian,
# Georgian -shvili/-dze, Turkish -oğlu, Baltic -aitė/-ienė. Used only on words that are not
# everyday English ("Season" ends in -son and is no name), so a long list costs no precision.
_SURNAME_END = re.compile(
    r"(?:d[oó]tt[ie]r|sson|s[oø]n|sen|ov[aá]|ev[aá]|ova|eva|sk[aáiyý]|ck[aáiyý]|wicz|owski|"
    r"ewski|enko|chuk|czuk|ovich|evich|ovi[cćč]|evi[cćč]|i[cćč]|escu|eanu|poulos|opoulou|akis|"
    r"idis|yan|ian|shvili|dze|o[gğ]lu|aitė|ienė|ytė|ait[eė]|ovna|evna|yuk|iuk|chenko|berg|"
    r"stein|mann|feld|baum|[aeiou]z|etti|elli|ucci|moto|yama|kawa|shita|mura|hara|uchi|zadeh|"
    r"nejad|abadi)$",
    re.IGNORECASE)
# A prefix with a capital after it ("McAllister", "O'Neill", "MacGiolla"), or a hyphen
# ("Al-Khatib", "Ben-David"): no English word has either shape.
_SURNAME_START = re.compile(
    r"^(?:(?:Mc|Mac|O['’]|D['’]|Fitz)[A-ZÀ-ÖØ-Þ]|(?:Al|El|Ben|Abu|Ap|Ab)-\w)")

GAZETTEER_LOCALES = (
    "en_US", "en_GB", "en_IE", "en_NZ", "en_IN", "de_DE", "de_AT", "de_CH", "fr_FR", "fr_CA",
    "es_ES", "es_MX", "es_AR", "pt_BR", "pt_PT", "it_IT", "nl_NL", "nl_BE", "pl_PL", "cs_CZ",
    "sk_SK", "sv_SE", "da_DK", "no_NO", "fi_FI", "ro_RO", "hu_HU", "hr_HR", "tr_TR", "is_IS",
    "ja_JP", "zh_CN", "sl_SI", "lv_LV", "lt_LT", "et_EE", "id_ID", "az_AZ", "yo_NG", "tw_GH",
    "zu_ZA",
)
# Latin-script attributes only: ja_JP and zh_CN keep their romanized names apart from the
# kana/hanzi ones, which never occur in the English texts the model reads.
_GIVEN = ("first_names", "first_names_male", "first_names_female", "first_romanized_names",
          "middle_names")
_FAMILY = ("last_names", "last_names_male", "last_names_female", "last_romanized_names",
           "last_names_without_suffix")


def _faker_names(attrs: tuple[str, ...]) -> frozenset[str]:
    names: set[str] = set()
    for locale in GAZETTEER_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr in attrs:
            values = getattr(provider, attr, ())
            if not isinstance(values, property):
                names.update(v for v in values if v.isascii() or (v[0].isalpha() and
                             all(c.isalpha() or c in " -'" for c in v) and _latin(v)))
    return frozenset(n.casefold() for n in names if len(n) >= 3)


def _latin(word: str) -> bool:
    return all(ord(c) < 0x250 for c in word)


@cache
def first_names() -> frozenset[str]:
    """Case-folded given names from Faker's census-derived lists for 41 locales (Latin script,
    romanized for Japanese and Chinese), a public gazetteer."""
    return _faker_names(_GIVEN)


@cache
def last_names() -> frozenset[str]:
    """Case-folded family names from the same Faker locales as ``first_names``."""
    return _faker_names(_FAMILY)


@cache
def everyday_words() -> frozenset[str]:
    """English words at least as frequent as 4 in 10^7 words (Zipf ≥ 2.6, about 50,000 words).

    From wordfreq (Speer et al.; Wikipedia, subtitles, news, books, web and social text), the
    best-kept offline frequency list for English on PyPI: it tells an everyday word ("waiter",
    "care", "frozen") from a rare one ("thistlewood", "Dvořáková"), which no name list can.
    nameparser and probablepeople were weighed and left out: they split a string already known to
    be a name into parts, they do not tell whether a word is one. Frequent names ("john", "smith")
    are everyday words here too, so this list is always read beside the name lists."""
    from wordfreq import get_frequency_dict

    threshold = 10 ** (2.6 - 9)  # Zipf = log10(frequency per 10^9 words)
    return frozenset(w for w, f in get_frequency_dict("en").items()
                     if f >= threshold and w.isalpha())


@cache
def place_words() -> frozenset[str]:
    """Case-folded words of the countries, states, regions and cities in Faker's address
    providers for the gazetteer locales: the places a location tag of common words can name
    ("South Africa", "Southern California")."""
    words: set[str] = set()
    for locale in GAZETTEER_LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.address.{locale}").Provider
        except ModuleNotFoundError:
            continue
        for attr in ("countries", "states", "cities", "regions", "provinces", "departments",
                     "municipalities", "districts", "real_city_names"):
            values = getattr(provider, attr, ())
            if isinstance(values, dict):
                values = [*values.keys(), *(v for v in values.values() if isinstance(v, str))]
            if not isinstance(values, property):
                words.update(w.casefold() for v in values if isinstance(v, str)
                             for w in re.findall(r"[^\W\d_]+", v))
    return frozenset(words)


@cache
def common_words() -> frozenset[str]:
    """The commonest ``everyday_words``: Zipf ≥ 3.5 (about 15,000 words: "kettle", "sale",
    "sadly"), where a rarer everyday word may still be a family name ("Hanks", "Affleck")."""
    from wordfreq import get_frequency_dict

    threshold = 10 ** (3.5 - 9)
    return frozenset(w for w, f in get_frequency_dict("en").items()
                     if f >= threshold and w.isalpha())


def zipf_rare(folded: str) -> bool:
    """Not an everyday English word (see ``everyday_words``), nor the plural of one
    ("kettles")."""
    common = everyday_words()
    return folded not in common and not (folded.endswith("s") and folded[:-1] in common)


@cache
def stop_words() -> frozenset[str]:
    """Words that are never a name token, even when capitalized: function words, greetings,
    chat words, calendar words and the nouns that follow "Dear"."""
    from spacy.lang.en.stop_words import STOP_WORDS

    extra = (
        "hello", "dear", "thanks", "thank", "regards", "cheers", "best", "kind",
        "sincerely", "yes", "no", "please", "sir", "madam", "team", "support",
        "customer", "client", "service", "sales", "all", "everyone", "monday", "tuesday",
        "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march",
        "may", "july", "september", "october", "november", "december",
        "today", "tomorrow", "yesterday", "name", "subject", "date", "phone",
        "mobile", "email", "tel", "mail", "address", "city", "dob", "ssn", "iban", "bic", "card",
        "account", "order", "invoice", "ticket", "patient", "employee", "meeting", "notes",
        "contact", "emergency", "shipping", "bank", "details", "transfer", "wire",
        "new", "reply", "signed", "sent", "from", "regarding", "attn", "ref",
        # Abbreviated days and months ("a Sat, or Sun."), which Faker lists as names.
        "mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri", "sat", "sun", "jan", "feb",
        "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    )
    return frozenset(STOP_WORDS) | frozenset(extra) | frozenset(_CHAT) | TITLES


def surname_shaped(word: str) -> bool:
    """Whether a capitalized word has the form of a family name and is no everyday word:
    "Sigurðardóttir", "Dvořáková", "McAllister", "O'Neill", "García-Márquez" (each part)."""
    if not word[:1].isupper():
        return False
    if _SURNAME_START.match(word) and word.casefold() not in stop_words():
        return True  # a prefix with a capital after it is no English word's shape
    return zipf_rare(word.casefold()) and any(
        len(part) > 4 and _SURNAME_END.search(part) for part in re.split(r"[-'’]", word))


def name_word(word: str) -> bool:
    """Whether a word can be part of a person's name: no function word, and a listed given or
    family name, surname-shaped, or no everyday English word (a rare word next to a cue)."""
    folded = word.casefold()
    if folded in stop_words() or len(folded) < 2:
        return False
    if folded in first_names() or folded in last_names() or surname_shaped(word):
        return True
    # A compound is judged by its parts ("García-Márquez", not "Service-check"); the apostrophe
    # of "O'Neill" or a possessive is no compound.
    parts = [p for p in re.split(r"-", folded.removesuffix("'s").removesuffix("’s")) if p]
    return all(p in first_names() or p in last_names() or p in PARTICLES or zipf_rare(p)
               for p in parts) and not all(p in PARTICLES for p in parts)
