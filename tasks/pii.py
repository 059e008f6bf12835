"""Finding personal data in text: Presidio offline for unknown PII, an index for known identifiers.

Used by the anonymize stage to scrub and to gate its output, and by generation to filter records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

log = logging.getLogger(__name__)

# Presidio entity → the placeholder written into text.
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


def _offline_tldextract() -> None:
    # Presidio's email recognizer calls tldextract, which fetches the public-suffix list from the
    # internet on first use; privgen must never touch the network, so use the bundled snapshot.
    import tldextract

    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(),
                                                                cache_dir=None)


def card_recognizer():
    """Presidio's card recognizer plus any 13–19 digit run that passes the Luhn check.

    Its built-in patterns predate Mastercard's 2-series (2221–2720) and miss such cards; the
    Luhn validation keeps the generic pattern from flagging ordinary long numbers most of the
    time."""
    from presidio_analyzer import Pattern
    from presidio_analyzer.predefined_recognizers import CreditCardRecognizer

    generic = Pattern("any card number", r"\b\d(?:[ -]?\d){12,18}\b", 0.3)
    return CreditCardRecognizer(patterns=[*CreditCardRecognizer.PATTERNS, generic])


_CAPITALIZED_RUN = re.compile(r"\b[A-Z][a-z]+(?:[ ][A-Z][a-z'’-]+){0,2}\b")
# Words after which a lone given name is someone's name ("my husband Mark called").
_CUES = re.compile(r"\b(?:wife|husband|partner|son|daughter|brother|sister|mother|father|mom|"
                   r"dad|friend|colleague|coworker|neighbou?r|manager|boss|named|called|"
                   r"mr|mrs|ms|dr)\.?\s+$", re.IGNORECASE)


def _given_name_recognizer_class():
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class GivenNameRecognizer(EntityRecognizer):
        """Person names by gazetteer: a known given name followed by capitalized surnames, or
        alone after a relation word.

        spaCy's small English model misses many names in short informal text (it tags "my
        wife Amber Grimes" as nothing or as an organization); a gazetteer of given names
        recovers them at the cost of the occasional capitalized product name."""

        def __init__(self) -> None:
            super().__init__(supported_entities=["PERSON"], name="GivenNameRecognizer",
                             supported_language="en")

        def load(self) -> None:
            first_names()

        def analyze(self, text, entities, nlp_artifacts=None):
            found = []
            for m in _CAPITALIZED_RUN.finditer(text):
                words = m.group().split()
                if words[0] not in first_names():
                    continue
                if len(words) >= 2 or _CUES.search(text[: m.start()]):
                    found.append(RecognizerResult("PERSON", m.start(), m.end(), 0.6))
            return found

    return GivenNameRecognizer


def GivenNameRecognizer():
    return _given_name_recognizer_class()()


@cache
def analyzer(ner_model: str, custom_patterns: tuple[tuple[str, str], ...] = ()):
    """A Presidio analyzer on a locally installed spaCy pipeline; it never downloads a model."""
    import spacy
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import IbanRecognizer

    from tasks.errors import ConfigError

    if not spacy.util.is_package(ner_model):
        raise ConfigError(
            f"anonymize.ner_model: spaCy pipeline {ner_model!r} is not installed; install it as a "
            "package (privgen never downloads models) or set anonymize.ner_model"
        )
    _offline_tldextract()
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": ner_model}],
        "ner_model_configuration": {
            # spaCy labels that are not personal data; Presidio warns on each one otherwise.
            "labels_to_ignore": ["CARDINAL", "ORDINAL", "QUANTITY", "MONEY", "PERCENT",
                                 "PRODUCT", "LAW", "LANGUAGE", "WORK_OF_ART", "EVENT", "TIME"],
        },
    })
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    # The registry's configured IBAN recognizer misses IBANs inside a sentence ("wire to
    # ES53…"); the recognizer class with its own defaults finds them, checksum-validated.
    engine.registry.remove_recognizer("IbanRecognizer")
    engine.registry.add_recognizer(IbanRecognizer())
    engine.registry.remove_recognizer("CreditCardRecognizer")
    engine.registry.add_recognizer(card_recognizer())
    engine.registry.add_recognizer(GivenNameRecognizer())
    for entity, regex in custom_patterns:
        engine.registry.add_recognizer(PatternRecognizer(
            supported_entity=entity, patterns=[Pattern(entity.lower(), regex, 0.9)]))
    return engine


@cache
def first_names() -> frozenset[str]:
    """Given names from Faker's census-derived lists for six locales, a public gazetteer."""
    from faker.providers.person import de_DE, en_GB, en_US, es_ES, fr_FR, it_IT

    names: set[str] = set()
    for module in (en_US, en_GB, de_DE, fr_FR, es_ES, it_IT):
        for attr in ("first_names", "first_names_male", "first_names_female"):
            names.update(getattr(module.Provider, attr, ()) or ())
    return frozenset(n for n in names if len(n) >= 3)


def presidio_spans(
    texts: list[str], *, ner_model: str, entities: Sequence[str], threshold: float,
    custom_patterns: tuple[tuple[str, str], ...] = (), batch_size: int = 64,
    allow: Sequence[str] = (),
) -> list[list[Span]]:
    """Presidio findings per text, batched through spaCy's ``nlp.pipe``; spans whose text is
    in ``allow`` are not PII."""
    from presidio_analyzer import BatchAnalyzerEngine

    engine = analyzer(ner_model, custom_patterns)
    wanted = list(entities) + [e for e, _ in custom_patterns]
    results = BatchAnalyzerEngine(engine).analyze_iterator(
        texts, language="en", batch_size=batch_size, entities=wanted, score_threshold=threshold,
        allow_list=list(allow),
    )
    return [[Span(r.start, r.end, r.entity_type) for r in found] for found in results]


@cache
def _pattern_recognizers():
    from presidio_analyzer.predefined_recognizers import (
        EmailRecognizer,
        IbanRecognizer,
        UsSsnRecognizer,
    )

    _offline_tldextract()
    return (EmailRecognizer(), card_recognizer(), IbanRecognizer(), UsSsnRecognizer())


def pattern_spans(text: str) -> list[Span]:
    """Checksum- and pattern-validated PII (email, card, IBAN, SSN), no NER: cheap enough to
    run on every output record as a last line of defence."""
    spans = []
    for recognizer in _pattern_recognizers():
        for r in recognizer.analyze(text, recognizer.supported_entities, None):
            if r.score >= 0.5:
                spans.append(Span(r.start, r.end, r.entity_type))
    return spans
