"""Finding personal data in text with Presidio's AnalyzerEngine, offline: validated patterns, name
rules and deny lists linked to the data first, then a spaCy NER model on the texts they leave
unexplained, batched. Used by the anonymize stage to scrub and to gate its output, and by
generation to filter records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import cache

from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import (
    NerModelConfiguration,
    NlpArtifacts,
    NoOpNlpEngine,
    SpacyNlpEngine,
)
from presidio_analyzer.predefined_recognizers import SpacyRecognizer

from tasks.pii_identifiers import IdentifierIndex, RowPattern, row_pattern, row_spans
from tasks.pii_names import (
    NameRuleRecognizer,
    complete_names,
    first_names,
    known_words,
    last_names,
    may_be_name,
    name_spans,
    needs_ner,
    ner_person,
    ner_place,
)
from tasks.pii_recognizers import (
    GATE_ENTITIES,
    PATTERNS,
    PHONE_REGIONS,
    Span,
    gate_spans,
    pattern_recognizers,
    pattern_spans,
)

__all__ = [
    "GATE_ENTITIES", "PHONE_REGIONS", "PLACEHOLDERS", "IdentifierIndex", "RowPattern", "Span",
    "find_pii", "first_names", "gate_spans", "last_names", "merge_spans", "name_spans",
    "ner_pipeline", "pattern_spans", "placeholder", "replace_spans", "row_pattern", "row_spans",
    "text_pieces",
]

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
    "STREET_ADDRESS": "<ADDRESS>",
    "POSTCODE": "<POSTCODE>",
    "DRIVER_LICENSE": "<DRIVER_LICENSE>",
}
LANGUAGE = "en"
# Recognizers whose findings are the data's own identifiers: never allowed away, whatever entity
# name their column carries.
_DENY_LISTS = frozenset({"privgen_known_identifiers", "privgen_row_identifiers"})
# spaCy labels (OntoNotes and WikiNER schemes) → Presidio entities; other labels are ignored.
_NER_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION",
               "FAC": "LOCATION"}


def placeholder(entity: str) -> str:
    return PLACEHOLDERS.get(entity, f"<{entity}>")


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Spans in text order, overlapping ones merged into the first and longest one's entity."""
    merged: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if merged and s.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, s.end), last.entity)
        else:
            merged.append(s)
    return merged


def replace_spans(text: str, spans: Iterable[Span],
                  replacement: Callable[[Span, str], str] | None = None) -> str:
    """Replace spans (merged) by ``replacement(span, found_text)``, by default a placeholder."""
    for s in reversed(merge_spans(spans)):
        new = replacement(s, text[s.start : s.end]) if replacement else placeholder(s.entity)
        text = text[: s.start] + new + text[s.end :]
    return text


# Overlap of consecutive pieces of a long text: any PII shorter than this that crosses a border
# lies whole in the next piece (an address with its city is under 200 characters).
CHUNK_OVERLAP = 500


def text_pieces(text: str, size: int, overlap: int = CHUNK_OVERLAP) -> list[tuple[int, str]]:
    """``text`` as (offset, piece) pairs of at most ``size`` characters, consecutive pieces
    overlapping by ``overlap`` characters and cut at a space where one is near; one piece when
    the text is short enough."""
    pieces, start = [], 0
    while True:
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            end = cut if cut > start else end
        pieces.append((start, text[start:end]))
        if end >= len(text):
            return pieces
        nxt = max(end - overlap, start + 1)
        space = text.find(" ", nxt, end)
        start = space + 1 if space != -1 else nxt


class _NoContextBoost(ContextAwareEnhancer):
    """privgen's recognizers read their context words themselves; Presidio's lemma-based boost
    needs lemmas that the NER-only pipeline does not compute, and costs time on every call."""

    def __init__(self) -> None:
        super().__init__(0, 0, 0, 0)

    def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        return raw_results


@cache
def _rule_analyzer(phone_regions: tuple[str, ...],
                   custom_patterns: tuple[tuple[str, str], ...]) -> AnalyzerEngine:
    """Patterns and name rules need no NLP: Presidio's no-op engine, and none of its predefined
    recognizers (see tasks.pii_recognizers for what they miss)."""
    recognizers: list[EntityRecognizer] = [
        *pattern_recognizers({p.entity for p in PATTERNS}, phone_regions), NameRuleRecognizer()]
    # Configured patterns are plain regexes: Presidio's own recognizer, case as written.
    recognizers += [PatternRecognizer(entity, name=f"pattern_{entity.lower()}",
                                      patterns=[Pattern(entity, regex, 1.0)], global_regex_flags=0)
                    for entity, regex in custom_patterns]
    return AnalyzerEngine(
        registry=RecognizerRegistry(recognizers, supported_languages=[LANGUAGE]),
        nlp_engine=NoOpNlpEngine([{"lang_code": LANGUAGE, "model_name": "none"}]),
        supported_languages=[LANGUAGE], context_aware_enhancer=_NoContextBoost())


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


class _NerOnlySpacyEngine(SpacyNlpEngine):
    """Presidio's spaCy engine over ``ner_pipeline``: its own ``load`` would download a missing
    model and run the whole pipeline."""

    def __init__(self, model: str) -> None:
        super().__init__(models=[{"lang_code": LANGUAGE, "model_name": model}])

    def load(self) -> None:
        nlp = ner_pipeline(self.models[0]["model_name"])
        self.ner_model_configuration = NerModelConfiguration(
            model_to_presidio_entity_mapping=_NER_LABELS,
            labels_to_ignore=[x for x in nlp.get_pipe("ner").labels if x not in _NER_LABELS])
        self.nlp = {LANGUAGE: nlp}

    def _doc_to_nlp_artifact(self, doc, language: str) -> NlpArtifacts:
        # Lemmas and the keywords made of them feed only Presidio's context boost, left out here.
        entities, scores = self._get_updated_entities(self._get_entities(doc),
                                                      self._get_scores_for_entities(doc))
        return NlpArtifacts(entities=entities, tokens=doc, tokens_indices=[], lemmas=[],
                            nlp_engine=self, language=language, scores=scores)


class _NameOrPlaceRecognizer(SpacyRecognizer):
    """Presidio's spaCy recognizer, less the entities no name or place looks like; a person is
    cut to its name words and dropped when it has none (``ner_person``: "Customer Care", "Ya",
    "Bonus Caller Prize" in real short messages, issue 12)."""

    def analyze(self, text, entities, nlp_artifacts=None):
        kept = []
        for r in super().analyze(text, entities, nlp_artifacts):
            if r.entity_type == "PERSON":
                person = ner_person(text, r.start, r.end)
                if person is None:
                    continue
                r.start, r.end = person
            elif r.entity_type == "LOCATION" and not ner_place(text, r.start, r.end):
                continue
            if may_be_name(text[r.start : r.end]):
                kept.append(r)
        return kept


@cache
def _ner_analyzer(model: str) -> AnalyzerEngine:
    """spaCy NER in Presidio's engine; analyze it with the artifacts of ``process_batch``."""
    recognizer = _NameOrPlaceRecognizer(supported_language=LANGUAGE,
                                        supported_entities=sorted(set(_NER_LABELS.values())))
    return AnalyzerEngine(
        registry=RecognizerRegistry([recognizer], supported_languages=[LANGUAGE]),
        nlp_engine=_NerOnlySpacyEngine(model), supported_languages=[LANGUAGE],
        context_aware_enhancer=_NoContextBoost())


def _spans(results: Iterable[RecognizerResult]) -> list[Span]:
    return [Span(r.start, r.end, r.entity_type) for r in results]


def _from_deny_list(result: RecognizerResult) -> bool:
    return result.recognition_metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY) in _DENY_LISTS


def find_pii(
    texts: Sequence[str], *, ner_model: str, entities: Sequence[str],
    custom_patterns: Sequence[tuple[str, str]] = (), allow: Iterable[str] = (),
    phone_regions: Sequence[str] = PHONE_REGIONS, batch_size: int = 256,
    known: IdentifierIndex | None = None, own: Sequence[Sequence[tuple[str, str]]] = (),
) -> list[list[Span]]:
    """PII spans per text, in two Presidio analyzers. The first runs patterns, name rules and the
    deny lists: ``known`` identifiers of the whole dataset, and per text ``own[i]``, its record's
    (value, entity) pairs, as an ad-hoc recognizer. The second runs spaCy NER, its artifacts
    computed in batches through ``nlp.pipe`` and only for the texts where a capitalized word is
    still unexplained. Spans whose text is in ``allow`` (case-insensitive) are not PII, unless a
    deny list found them; deny-list findings keep their column's entity, whatever ``entities``
    holds."""
    wanted = set(entities) | {e for e, _ in custom_patterns}
    allow = list(allow)
    rules = _rule_analyzer(tuple(phone_regions), tuple(custom_patterns))
    supported = set(rules.get_supported_entities(LANGUAGE))
    no_nlp = rules.nlp_engine.process_text("", LANGUAGE)
    dataset = [known] if known is not None and len(known) else []
    found: list[list[RecognizerResult]] = []
    for i, text in enumerate(texts):
        row = row_pattern(own[i]) if own else None
        ad_hoc = dataset + ([row] if row is not None else [])
        request = (wanted & supported).union(*(r.supported_entities for r in ad_hoc))
        found.append(rules.analyze(text, LANGUAGE, entities=sorted(request), nlp_artifacts=no_nlp,
                                   ad_hoc_recognizers=ad_hoc) if request else [])
    found = [[r for r in results if r.entity_type in wanted or _from_deny_list(r)]
             for results in found]

    ner_wanted = sorted(wanted & set(_NER_LABELS.values()))
    if ner_wanted:
        ner = _ner_analyzer(ner_model)
        allowed_words = known_words(allow)
        todo = [i for i, text in enumerate(texts)
                if needs_ner(text, _spans(found[i]), allowed_words)]
        batches = ner.nlp_engine.process_batch([texts[i] for i in todo], LANGUAGE,
                                               batch_size=batch_size)
        for i, (_, artifacts) in zip(todo, batches, strict=True):
            found[i] += ner.analyze(texts[i], LANGUAGE, entities=ner_wanted,
                                    nlp_artifacts=artifacts)

    # Presidio's own allow_list is applied before name completion, which can widen a tagged
    # "Diego" into an allowed "San Diego"; so allowed values are removed here, after it.
    allowed = {a.casefold() for a in allow}
    out = []
    for text, results in zip(texts, found, strict=True):
        protected = [r for r in results if _from_deny_list(r)]
        spans = _spans(results)
        if "PERSON" in wanted:
            spans = complete_names(text, spans)
        out.append([s for s in spans if text[s.start : s.end].casefold() not in allowed
                    or any(s.start <= p.start and p.end <= s.end for p in protected)])
    return out
