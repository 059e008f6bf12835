"""Person names by rule, as a Presidio recognizer: name lists, word frequency, surname shapes and
the words around a name that say a person is meant.

spaCy's small English model misses many names in short informal text ("my wife Ros Quill", "ask
for evander thistlewood", "Szabó Zsófia") and takes capitalized common words for names ("Customer
Care", "Ya"); these rules find the first kind, judge what the model tags, and tell which texts
still need the model at all. Word lists live in tasks.pii_name_lists, cue words in
tasks.pii_name_cues.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tasks.pii_name_cues import (
    ACTS_AFTER,
    COMPANY_AFTER,
    DETERMINER,
    INFLECTED,
    LABEL,
    NAMING_CUE,
    PERSON_AFTER,
    PLACE_BEFORE,
    SENTENCE_START,
    STRONG,
    TITLE_CUE,
    TOKEN,
    WEAK,
)
from tasks.pii_name_lists import (
    PARTICLES,
    common_words,
    first_names,
    last_names,
    name_word,
    place_words,
    stop_words,
    surname_shaped,
    zipf_rare,
)
from tasks.pii_recognizers import Span, SpanRecognizer

__all__ = ["PARTICLES", "NameRuleRecognizer", "capitalized", "complete_names", "first_names",
           "known_words", "last_names", "may_be_name", "name_spans", "needs_ner", "ner_person",
           "ner_place",
           "stop_words"]



def _key(word: str) -> str:
    """The case-folded word without a possessive ending ("Fox's" → "fox")."""
    folded = word.casefold()
    return folded[:-2] if folded.endswith(("'s", "’s")) else folded


def _given(word: str) -> bool:
    return _key(word) in first_names() and _key(word) not in stop_words()


def _common(word: str) -> bool:
    """One of the commonest English words and on no name list: "Kettle", "Sale", "Sadly";
    rarer words may be family names ("Hanks")."""
    key = _key(word)
    return (key in common_words() and key not in first_names() and key not in last_names()) \
        or key in stop_words()


def _listed(word: str) -> bool:
    key = _key(word)
    return key not in stop_words() and (key in first_names() or key in last_names())


def capitalized(token: str) -> bool:
    return token[0].isupper() and _key(token) not in stop_words()


def _continues_name(m: re.Match, caps: bool) -> bool:
    """Whether a word can continue a name: capitalized, no function word, not glued to a digit
    ("Aurora X2"), and in capitals only inside a name in capitals ("Watkins VPN" ends before
    the acronym)."""
    word = m.group()
    return (capitalized(word) and not m.string[m.end() : m.end() + 1].isdigit()
            and (caps or len(word) == 1 or not word.isupper()))


def _lower_name(word: str) -> bool:
    """A lower-case word that can be part of a name: rare in English or a listed name that is no
    everyday word ("thistlewood", "zsófia", "fotheringay-pratt", but not "said" or "floor")."""
    key = _key(word)
    if key in stop_words() or len(key) < 3 or not word.islower():
        return False
    # Each part of a compound is rare or listed and one is rare: "fotheringay-pratt".
    parts = [p for p in re.split(r"[-'’]", key) if p]
    return any(map(zipf_rare, parts)) and all(
        zipf_rare(p) or p in first_names() or p in last_names() for p in parts)


def _gap(tokens: list[re.Match], j: int) -> str:
    return tokens[j].string[tokens[j].end() : tokens[j + 1].start()]


def _name_end(tokens: list[re.Match], i: int, lower: bool = False, strict: bool = False) -> int:
    """Index of the last word of the name starting at ``tokens[i]``: capitalized words (or, with
    ``lower``, lower-case name words), particles before one ("van der Sloot", "de la Cruz") and
    initials ("John Q. Public") on the same line, four words at most past particles. With
    ``strict``, no common word goes on a name ("[Ninja] Sushi")."""
    caps = len(tokens[i].group()) > 1 and tokens[i].group().isupper()
    j, words = i, 1
    while j + 1 < len(tokens) and words < 4:
        gap = _gap(tokens, j)
        initial = len(tokens[j].group()) == 1 and tokens[j].group().isupper() and gap == ". "
        if gap not in (" ", "-") and not initial:
            break
        k = j + 1
        while (k + 1 < len(tokens) and k - j <= 3 and tokens[k].group().casefold() in PARTICLES
               and _gap(tokens, k) == " "):
            k += 1
        nxt = tokens[k]
        # In capitals or lower case the case tells nothing: only name words go on a name.
        ok = (_lower_name(nxt.group()) if lower else _continues_name(nxt, caps)
              and (not caps or zipf_rare(_key(nxt.group())) or surname_shaped(nxt.group())
                   or (_listed(nxt.group()) and not PERSON_AFTER.match(" " + nxt.group()))))
        if not ok or (k > j + 1 and gap not in (" ", ". ")) or (strict and _common(nxt.group())):
            break
        j, words = k, words + 1
    return j


def _cue_before(text: str, start: int) -> str:
    return text[max(0, start - 40) : start]


def _capitalized_name(tokens: list[re.Match], i: int, j: int) -> bool:
    """Whether the capitalized run ``tokens[i..j]`` is a name by the words around it or in it."""
    text, first = tokens[i].string, tokens[i].group()
    before, after = _cue_before(text, tokens[i].start()), text[tokens[j].end() :]
    if tokens[j].group().casefold().endswith(("'s", "’s")):
        after = text[tokens[j].end() - 2 :]  # "Ter-Petrosyan's wife"
    words = [t.group() for t in tokens[i : j + 1]
             if t.group().casefold() not in PARTICLES and len(t.group()) > 1]
    if TITLE_CUE.search(before) or (len(words) > 1 and any(
            len(t.group()) == 1 and _gap(tokens, k) == ". "
            for k, t in enumerate(tokens[i:j], start=i))):
        return True  # after a title, or around a middle initial ("John Q. Public")
    all_name_words = all(map(name_word, words))
    weak_ok = (len(words) > 1 and all(map(name_word, words))) or surname_shaped(first) or (
        _listed(first) and zipf_rare(_key(first)))
    weak = WEAK.search(before) or (before.isupper() and WEAK.search(before.lower()))
    # After a strong cue ("signed for by", "spoke to"), a word no commoner than a family name
    # ("Ashcroft", which wordfreq counts as an everyday word) is one.
    strong_ok = any(map(name_word, words)) or _key(first) not in common_words()
    if (STRONG.search(before) and strong_ok) or (
            name_word(first) and weak and weak_ok):
        return True
    # After a field label ("New lead:", "Bank details:"), names of two or more name words.
    if LABEL.search(before) and len(words) > 1 and all_name_words:
        return True
    # "Halvorsen called"; one word opening a sentence must be a listed or surname-shaped name.
    if all_name_words and (PERSON_AFTER.match(after) or (ACTS_AFTER.match(after) and (
            len(words) > 1 or not SENTENCE_START.search(before) or _listed(first)
            or surname_shaped(first)))):
        return True
    if len(words) < 2:
        return False
    # A given name and another name word ("Grace Kelly", "Szabó Zsófia"), or a family name with
    # name words ("Takahashi Haruto"), or rare words only, not at a sentence start ("Bolat
    # Seitkali"): a run of everyday words ("Customer Care", "Great Subway") is no name.
    # Listed names that are everyday words ("Summer Sale", "Golden Kettle") need a rare one.
    # A particle between capitalized words ("Ahmad bin Abdullah") counts as a rare word.
    rare = any(zipf_rare(_key(w)) or surname_shaped(w) for w in words) or any(
        t.group() in PARTICLES for t in tokens[i + 1 : j])
    if _given(first) and name_word(words[1]) and rare:
        return True
    if all_name_words and rare and any(_listed(w) or surname_shaped(w) for w in words):
        return True
    return (all(zipf_rare(_key(w)) for w in words) and not SENTENCE_START.search(before))


def name_spans(text: str) -> list[Span]:
    """Names found by rule: capitalized runs judged by ``_capitalized_name``, "Doe, Jane", and
    lower-case names after a cue ("ask for evander thistlewood") or before one ("jeff called")."""
    tokens = list(TOKEN.finditer(text))
    spans: list[Span] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        word = tok.group()
        before = _cue_before(text, tok.start())
        if word.casefold() in PARTICLES and TITLE_CUE.search(before) and i + 1 < len(tokens):
            j = _name_end(tokens, i)  # "Mr. van der Berg": the run starts at a particle
            if j > i:
                spans.append(Span(tok.start(), tokens[j].end(), "PERSON"))
                i = j + 1
                continue
        if capitalized(word):
            j = _name_end(tokens, i)
            if _capitalized_name(tokens, i, j) and not _code_or_company(text, tok.start(),
                                                                        tokens[j].end()):
                start, end = _particles_before(tokens, i), tokens[j].end()
                if tokens[j].group().endswith(("'s", "’s")):
                    end -= 2  # "<PERSON>'s wife"
                spans.append(Span(tokens[start].start(), end, "PERSON"))
                i = j + 1
                continue
            prev = tokens[i - 1] if i else None
            if (_given(word) and prev and text[prev.end() : tok.start()] == ", "
                    and capitalized(prev.group()) and not _common(prev.group())):
                if spans and spans[-1].end == prev.end():  # "cardholder Bir, Ekiya"
                    spans[-1] = Span(spans[-1].start, tok.end(), "PERSON")
                elif not (spans and spans[-1].end > prev.start()):
                    spans.append(Span(prev.start(), tok.end(), "PERSON"))  # "Doe, Jane"
        elif word.islower():
            j = _lower_run(tokens, i, before)
            if j is not None:
                spans.append(Span(tok.start(), tokens[j].end(), "PERSON"))
                i = j + 1
                continue
        i += 1
    return spans


def _code_or_company(text: str, start: int, end: int) -> bool:
    """Whether letters at ``text[start:end]`` are glued to digits (a code: "JJD2613…"), end in
    an abbreviation, or are followed by a company's legal form."""
    return (text[end : end + 1].isdigit() or text[start - 1 : start].isdigit()
            or bool(re.match(r"\.[^\W\d_]", text[end : end + 2]))  # "… S.L.", "… S.A."
            or bool(COMPANY_AFTER.match(text[end:])))


def _particles_before(tokens: list[re.Match], i: int) -> int:
    """Index of the first of the particles just before ``tokens[i]`` ("bin Rashidi Faisal",
    "Te Whata"), or ``i``."""
    k = i
    while k > 0 and i - k < 3 and tokens[k - 1].group().casefold() in PARTICLES \
            and _gap(tokens, k - 1) == " ":
        k -= 1
    return k


def _lower_run(tokens: list[re.Match], i: int, before: str) -> int | None:
    """Index of the last word of a lower-case name starting at ``tokens[i]``, or None."""
    word, text = tokens[i].group(), tokens[i].string
    after = text[tokens[i].end() :]
    if INFLECTED.search(word):
        return None
    if TITLE_CUE.search(before) and (_listed(word) or surname_shaped(word.title())):
        return _name_end(tokens, i, lower=True)  # "dr. nakamura", "mr o'sullivan"
    if _lower_name(word) and (TITLE_CUE.search(before) or (STRONG.search(before) and (
            _listed(word) or not re.search(r"\bi'?m\s+$|\bi am\s+$", before, re.I)))):
        return _name_end(tokens, i, lower=True)
    # "jeff called", but not "the guy called": verbs only, no article before.
    if (_given(word) and PERSON_AFTER.match(after) and "who" not in after[:6]
            and not DETERMINER.search(before)):
        return i
    # An everyday given name ("mark", "bill") only where it is asked for by name and ends the
    # phrase: "ask for mark." but not "my husband said she".
    if _given(word) and (NAMING_CUE.search(before) or STRONG.search(before)):
        if re.match(r"^(?:\s*[,.!?;:)]|\s*$|\n)", after):
            return i
        nxt = tokens[i + 1].group() if i + 1 < len(tokens) and _gap(tokens, i) == " " else ""
        if nxt and (_lower_name(nxt) or (_listed(nxt) and not _verbish(nxt))):
            return _name_end(tokens, i + 1, lower=True)  # "it's hans müller"
        # "my coworker colin needs it", but not "my husband said she": no verb in a name.
        if NAMING_CUE.search(before) and not _verbish(word):
            return _name_end(tokens, i, lower=True)
    # "pls reach michael sanders": after a weaker cue, a given and a family name, both listed.
    nxt = tokens[i + 1].group() if i + 1 < len(tokens) and _gap(tokens, i) == " " else ""
    if (WEAK.search(before) and _given(word) and nxt and _listed(nxt) and nxt.islower()
            and not _verbish(nxt) and not _verbish(word)):
        return i + 1
    return _lower_pair(tokens, i)


def _verbish(word: str) -> bool:
    return bool(PERSON_AFTER.match(" " + word) or ACTS_AFTER.match(" " + word)
                or INFLECTED.search(word))


def _lower_pair(tokens: list[re.Match], i: int) -> int | None:
    """Index of the last word of a lower-case name of two to four words with no cue, or None:
    every word rare or listed, one of them rare and one listed ("varga istván", "daiki
    tsukamoto", "ximena de la fuente"); everyday pairs ("summer sale") are no name."""
    def fits(word: str) -> bool:
        return word.islower() and not INFLECTED.search(word) and (
            _lower_name(word) or _listed(word))

    if not fits(tokens[i].group()):
        return None
    j, words = i, [tokens[i].group()]
    while j + 1 < len(tokens) and len(words) < 4 and _gap(tokens, j) == " ":
        k = j + 1
        while (k + 1 < len(tokens) and k - j <= 3 and tokens[k].group() in PARTICLES
               and _gap(tokens, k) == " "):
            k += 1
        if not fits(tokens[k].group()):
            break
        j = k
        words.append(tokens[k].group())
    # One word must be a listed name that is no everyday word ("istván", "tsukamoto"): not
    # "pleather case" or "bloddy mary".
    if len(words) < 2 or not any(map(_lower_name, words)):
        return None
    # Or a listed given name before rare words ("margaret okonkwo", "priya raghunathan"): the
    # family names lists miss most, and an everyday pair ("rose garden") has no rare word.
    if not (any(_listed(w) and zipf_rare(_key(w)) for w in words)
            or (_given(words[0]) and all(map(_lower_name, words[1:])))):
        words = []
    text = tokens[i].string
    cue = (STRONG.search(_cue_before(text, tokens[i].start())) or WEAK.search(
        _cue_before(text, tokens[i].start())) or PERSON_AFTER.match(text[tokens[j].end() :]))
    if words or (cue and all(map(_lower_name, [t.group() for t in tokens[i : j + 1]]))):
        return j
    return None



def ner_person(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The part of a model's PERSON span that can be a name, or None: leading everyday words go
    ("Director Paul Matthews" → "Paul Matthews"); a run of everyday words ("Customer Care",
    "Bonus Caller Prize", "Ya"), or one word after an article ("the Pho") is no person."""
    if _code_or_company(text, start, end) or any(c.isdigit() for c in text[start:end]):
        return None
    words = list(TOKEN.finditer(text, start, end))
    # A leading title or role goes only before a given name ("Director Paul Matthews"), never
    # before a thing ("Lobster Bisque").
    while len(words) > 1 and _common(words[0].group()) and _given(words[1].group()):
        words.pop(0)
    if not words or any(c.isdigit() for c in text[words[0].start() : words[-1].end()]):
        return None
    first = words[0].group()
    if not first[0].isupper():
        return None
    # A name ends in a name word ("Golden Kettle", "Ring Doorbell" do not); one word alone is a
    # given name, or a rare word not after an article ("the Pho"), not an everyday family name
    # ("Curry").
    last = words[-1].group()
    if COMPANY_AFTER.match(" " + last):
        return None  # "Thomsen & Søn ApS"
    if _common(last) or not (name_word(first) or _given(first)) or (len(words) > 1 and not (
            _given(first) or all(name_word(w.group()) for w in words[1:]))):
        return None
    # One word after an article or a preposition of place is a thing or a venue: "the Pho",
    # "at Bellagio", "in Madison".
    before = text[max(0, words[0].start() - 12) : words[0].start()]
    if len(words) == 1 and not _given(first) and (
            _key(first) in common_words() or DETERMINER.search(before)):
        return None
    if len(words) == 1 and PLACE_BEFORE.search(before):
        return None
    return words[0].start(), words[-1].end()


def ner_place(text: str, start: int, end: int) -> bool:
    """Whether a model's LOCATION span can be a place: not when made of common words alone that
    name no place in the gazetteer, as a phrase or after an article ("the Blue Room", "the
    Dessert Party", "Cheap Ramen"); one common word alone may be a city ("Phoenix")."""
    words = [w.group() for w in TOKEN.finditer(text, start, end)]
    content = [w for w in words if w.casefold() not in ("the", "a", "an")]
    if not content or any(_key(w) not in common_words() or _key(w) in place_words()
                          for w in content):
        return True
    return len(content) == 1 and not DETERMINER.search(text[max(0, start - 12) : start + 4])


def _run_start(tokens: list[re.Match], j: int, caps: bool) -> int:
    """Index of the first word of the capitalized run that ends at ``tokens[j]``."""
    i = j
    while i > 0 and j - i < 5 and _gap(tokens, i - 1) == " ":
        k = _particles_before(tokens, i)
        if 0 < k < i and _gap(tokens, k - 1) == " " and _continues_name(tokens[k - 1], caps):
            i = k - 1  # "Faisal bin [Rashidi]"
        elif _continues_name(tokens[i - 1], caps) and not _common(tokens[i - 1].group()):
            i -= 1
        else:
            break
    return i


def complete_names(text: str, spans: list[Span]) -> list[Span]:
    """Widen person spans to the whole capitalized name (the model often tags only the part
    it knows: "Mekdes [Tesfaye]"), and take the other name of a pair ("X Y and <PERSON>")."""
    tokens = list(TOKEN.finditer(text))
    out, people = [], set()
    for s in spans:
        inside = [k for k, t in enumerate(tokens) if s.start <= t.start() and t.end() <= s.end]
        if s.entity != "PERSON" or not inside:
            out.append(s)
            continue
        caps = text[s.start : s.end].isupper()
        lower = tokens[inside[-1]].group().islower()
        people.add((_run_start(tokens, inside[0], caps), max(
            inside[-1], _name_end(tokens, inside[-1], lower=lower, strict=True))))
    for first, last in list(people):
        caps = text[tokens[first].start() : tokens[last].end()].isupper()
        if (first >= 2 and tokens[first - 1].group().casefold() in ("and", "or")
                and _continues_name(tokens[first - 2], caps)
                and name_word(tokens[first - 2].group())):
            people.add((_run_start(tokens, first - 2, caps), first - 2))
        if (last + 2 < len(tokens) and tokens[last + 1].group().casefold() in ("and", "or")
                and _continues_name(tokens[last + 2], caps)
                and name_word(tokens[last + 2].group())):
            people.add((last + 2, _name_end(tokens, last + 2)))
    return out + [Span(tokens[a].start(), tokens[b].end(), "PERSON") for a, b in sorted(people)]


def may_be_name(text: str) -> bool:
    """Whether a model's entity can be a name or a place: names and places hold no digits, nor is
    a run of function words ("Tel.") a name."""
    return not any(c.isdigit() for c in text) and any(map(capitalized, TOKEN.findall(text)))


def known_words(values: Iterable[str]) -> frozenset[str]:
    """The case-folded words of allowed values, which ``needs_ner`` need not explain."""
    return frozenset(w.casefold() for v in values for w in TOKEN.findall(v))


def needs_ner(text: str, found: list[Span], known: frozenset[str] = frozenset()) -> bool:
    """Whether a capitalized word remains that is no function word, no word of an allowed
    value and not already found: texts without one hold no name or place the model could add."""
    ignore = stop_words() | known
    for tok in TOKEN.finditer(text):
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
