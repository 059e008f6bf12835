"""Person names by rule, as a Presidio recognizer: a given-name gazetteer, titles and cue words.

spaCy's small English model misses many names in short informal text ("my wife Amber Grimes", "ask
for jimmy"); these rules find them, widen what the model tags only in part, and tell which texts
still need the model at all.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from functools import cache

from tasks.pii_recognizers import Span, SpanRecognizer

_TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
PARTICLES = frozenset((
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
def stop_words() -> frozenset[str]:
    """Words that are never a name token, even when capitalized: function words, greetings,
    calendar words and the nouns that follow "Dear"."""
    from spacy.lang.en.stop_words import STOP_WORDS

    extra = (
        "hi", "hello", "hey", "dear", "thanks", "thank", "regards", "cheers", "best", "kind",
        "sincerely", "yes", "no", "ok", "okay", "please", "sir", "madam", "team", "support",
        "customer", "client", "service", "sales", "all", "everyone", "monday", "tuesday",
        "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march",
        "april", "may", "june", "july", "august", "september", "october", "november", "december",
        "today", "tomorrow", "yesterday", "name", "subject", "re", "fw", "fwd", "date", "phone",
        "mobile", "email", "tel", "mail", "address", "city", "dob", "ssn", "iban", "bic", "card",
        "account", "order", "invoice", "ticket", "patient", "employee", "meeting", "notes",
        "customer", "contact", "emergency", "shipping", "bank", "details", "transfer", "wire",
        "new", "reply"
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


def capitalized(token: str) -> bool:
    return token[0].isupper() and token.casefold() not in stop_words()


def _continues_name(m: re.Match, caps: bool) -> bool:
    """Whether a word can continue a name: capitalized, no function word, not glued to a digit
    ("Aurora X2"), and in capitals only inside a name in capitals ("Watkins VPN" ends before
    the acronym)."""
    word = m.group()
    return (capitalized(word) and not m.string[m.end() : m.end() + 1].isdigit()
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
        elif (tokens[j + 1].group() in PARTICLES and j + 2 < len(tokens)
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
    given, family, stop = first_names(), last_names(), stop_words()
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
                    and capitalized(prev.group())):
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


def may_be_name(text: str) -> bool:
    """Whether a model's entity can be a name or a place: names and places hold no digits, nor is
    a run of function words ("Tel.") a name."""
    return not any(c.isdigit() for c in text) and any(map(capitalized, _TOKEN.findall(text)))


def known_words(values: Iterable[str]) -> frozenset[str]:
    """The case-folded words of allowed values, which ``needs_ner`` need not explain."""
    return frozenset(w.casefold() for v in values for w in _TOKEN.findall(v))


def needs_ner(text: str, found: list[Span], known: frozenset[str] = frozenset()) -> bool:
    """Whether a capitalized word remains that is no function word, no word of an allowed
    value and not already found: texts without one hold no name or place the model could add."""
    ignore = stop_words() | known
    for tok in _TOKEN.finditer(text):
        word = tok.group()
        if word[0].isupper() and word.casefold() not in ignore and not any(
                s.start <= tok.start() and tok.end() <= s.end for s in found):
            return True
    return False


class NameRuleRecognizer(SpanRecognizer):
    """``name_spans`` as a Presidio recognizer; scored below the checksum-validated patterns
    because a rule can mistake a product or a place for a person."""

    def __init__(self) -> None:
        super().__init__(["PERSON"], name="privgen_name_rules", score=0.85)

    def find(self, text: str) -> list[Span]:
        return name_spans(text)
