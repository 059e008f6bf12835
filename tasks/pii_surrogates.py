"""Consistent surrogates for the names, e-mail addresses and phone numbers found in text: fake
values that Faker draws from a seed which is the value's keyed pseudonym, so one person reads the
same everywhere and nothing of the original can be computed back without the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import count

from faker import Faker

from tasks.pii_identifiers import IdentifierIndex
from tasks.pii_names import PARTICLES, first_names
from tasks.pii_phones import without_extension
from tasks.pii_recognizers import Span, digits

SURROGATE_ENTITIES = frozenset({"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"})
# Reserved for documentation and examples (RFC 2606; the 555-0100 to 555-0199 block of every
# North American area code): a surrogate can never reach a real mailbox or line.
RESERVED_DOMAINS = ("example.com", "example.org", "example.net")
_NAME_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


class Surrogates:
    """``replacement`` for ``pii.replace_spans``: a surrogate for a name, e-mail or phone, the
    placeholder for any other entity.

    ``pseudonym(value)`` is the keyed pseudonym that seeds Faker. A name is replaced word by word
    (a given name by a given name, any other word by a family name) so "Jane" alone and "Jane
    Doe" stay the same person. A draw that equals the original word or holds an identifier in
    ``known`` is drawn again, deterministically: a surrogate must not be, or accuse, someone real.
    ``written`` collects every surrogate used, for the output gate.
    """

    def __init__(self, pseudonym: Callable[[str], str], known: IdentifierIndex,
                 placeholder: Callable[[str], str]) -> None:
        self._pseudonym, self._known, self._placeholder = pseudonym, known, placeholder
        self._fake = Faker("en_US")
        self._drawn: dict[tuple[str, str], str] = {}
        self.written: set[str] = set()

    def __call__(self, span: Span, value: str) -> str:
        if span.entity not in SURROGATE_ENTITIES:
            return self._placeholder(span.entity)
        key = (span.entity, value)
        if key not in self._drawn:
            attempt = 0
            while self._known.find(new := self._draw(span.entity, value, attempt)):
                attempt += 1
            self._drawn[key] = new
        self.written.add(self._drawn[key])
        return self._drawn[key]

    def _seeded(self, kind: str, value: str, attempt: int) -> Faker:
        seed = self._pseudonym(f"{kind}:{value}")
        self._fake.seed_instance(f"{seed}/{attempt}")
        return self._fake

    def _draw(self, entity: str, value: str, attempt: int) -> str:
        if entity == "PERSON":
            return _NAME_WORD.sub(lambda m: self._name_word(m.group(), attempt), value)
        if entity == "EMAIL_ADDRESS":
            fake = self._seeded(entity, value, attempt)  # the pseudonym ignores case
            return f"{fake.user_name()}@{fake.random_element(RESERVED_DOMAINS)}"
        # One number in any format, with or without its extension.
        fake = self._seeded(entity, digits(without_extension(value))[-10:], attempt)
        return f"({fake.random_int(201, 989)}) 555-01{fake.random_int(0, 99):02d}"

    def _name_word(self, word: str, attempt: int) -> str:
        folded = word.casefold()
        if folded in PARTICLES:
            return word
        given = folded in first_names()
        for retry in count():
            fake = self._seeded("PERSON", folded, attempt * 1000 + retry)
            new = fake.first_name() if given else fake.last_name()
            if new.casefold() != folded:
                break
        if word.isupper() and len(word) > 1:
            return new.upper()
        return new.lower() if word.islower() else new
