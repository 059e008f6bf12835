"""One seeded Faker per locale, shared by the labeled text generators of the PII benchmark."""

from __future__ import annotations

from collections.abc import Iterable

from faker import Faker


def seeded_fakers(locales: Iterable[str], seed: int) -> dict[str, Faker]:
    """A Faker per locale, the i-th seeded with ``seed + i``: the same locales and seed give
    the same values."""
    fakers = {}
    for i, locale in enumerate(locales):
        fakers[locale] = Faker(locale)
        fakers[locale].seed_instance(seed + i)
    return fakers
