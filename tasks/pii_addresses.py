"""Regexes and checks for street addresses, postcodes and labelled driver-licence numbers in free
text, in the formats of several countries; ``tasks.pii_recognizers`` turns them into Presidio
recognizers.

Hand-written on purpose, after trying the libraries (issue 12 asked): pyap 0.3.1 (US/CA/GB
detection in text, last released 2020) finds an address only with its city, region and postcode,
misses PO boxes, military addresses, "42 Wallaby Way" and every continental format, and took
1.5 s for 20,000 characters on the three country grammars it has (about 30 times privgen's whole
scrubber); usaddress and python-stdnum parse or validate a string already known to be an address
or a number, they do not find one in a sentence. What a library would add here is a grammar, and
these regexes are that grammar, measured in benchmarks/pii_recall.py (STREET_ADDRESS, POSTCODE,
DRIVER_LICENSE).
"""

from __future__ import annotations

import re

# US states and territories, Canadian provinces: the region before a ZIP or postal code.
_REGIONS = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|"
    "NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI|AS|MP|"
    "AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC|SK|YT"
)
_US_ZIP = r"\d{5}(?:-\d{4})?"
# Royal Mail's outward code (area, district) and inward code (sector, unit), "SW1A 1AA".
_UK_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]?|GIR) ?\d[ABD-HJLNP-UW-Z]{2}"
# Canada Post: letters D, F, I, O, Q, U never occur, W and Z never first.
_CA_POSTCODE = r"[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z][ -]?\d[ABCEGHJ-NPRSTV-Z]\d"
_CAP = r"[A-ZÀ-ÖØ-Þ]"
_CITY = rf"{_CAP}[\w'’.-]*(?:[ -]{_CAP}[\w'’.-]*){{0,2}}"

# A street word after a house number ("12 Oak Lane", "12 oak lane": street words and units in
# any case, while the continental grammars rely on capitals for names); words that cannot be
# part of a street's name stop the match, so "3 days on the road" is not an address.
_EN_SUFFIX = (
    "street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|square|"
    "sq|terrace|terr|way|crescent|cres|close|parkway|pkwy|highway|hwy|circle|cir|trail|trl|row|"
    "mews|gardens|gdns|grove|walk|alley|loop|plaza|embankment|rise|green|parade|esplanade|"
    "hill|freeway|fwy|expressway|turnpike|pike|causeway|quay|wharf|broadway"
)
_NOT_A_STREET_WORD = (
    "the|a|an|on|in|at|of|to|for|and|or|with|from|by|my|your|our|his|her|their|is|are|was|"
    "were|be|it|this|that|these|those|days?|weeks?|months?|years?|hours?|minutes?|times?|items?|"
    "people|percent|kids|children|miles?|km|more|less|than|per|each|new|old|other"
)
_UNIT = (r"(?:apt|apartment|suite|ste|unit|flat|floor|fl|room|rm|bldg|building|no)\.?\s*#?\s*"
         r"[\w-]{1,6}|#\s*\d[\w-]{0,5}")
_EN_STREET = (
    rf"(?:(?i:{_UNIT}),?\s+)?"
    r"(?<![\w.,/$€£-])\d{1,6}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?,?\s+"
    r"(?:(?:[NSEW]|North|South|East|West|NE|NW|SE|SW)\.?\s+)?"
    rf"(?:(?!(?i:{_NOT_A_STREET_WORD})\b)(?:[^\W\d_][\w'’.-]*|\d+(?:st|nd|rd|th))\s+)"
    rf"{{1,4}}?(?i:{_EN_SUFFIX})\b\.?"
    rf"(?:,?\s+(?i:{_UNIT}))?"
)
# After a street: ", Springfield, IL 62704", " London SW1A 1AA", ", Ottawa ON K1A 0B1".
_EN_TAIL = (
    rf"(?:,?\s+(?:{_CITY},?\s+)?(?:(?:{_REGIONS})\.?,?\s+)?"
    rf"(?:{_US_ZIP}|{_UK_POSTCODE}|{_CA_POSTCODE})(?![\w-])"
    rf"|,\s*{_CITY},?\s+(?:{_REGIONS})(?![\w-]))?"
)
# German, Austrian, Swiss, Dutch, Scandinavian: the house number after the street word,
# "Musterstraße 12", "Berliner Str. 5a", "Keizersgracht 123", "Storgatan 4".
_GLUED_SUFFIX = (
    "straße|strasse|str\\.|weg|gasse|platz|allee|ring|damm|ufer|steig|pfad|chaussee|markt|"
    "straat|laan|gracht|plein|kade|singel|dijk|gatan|vägen|gränd|torget|gade|vej|veien|gata"
)
_WORD_SUFFIX = "Straße|Strasse|Str\\.|Weg|Gasse|Platz|Allee|Ring|Damm|Ufer|Chaussee|Markt"
_CONTINENTAL_STREET = (
    rf"(?<![\w-])(?:{_CAP}[\w'’.-]*?(?i:{_GLUED_SUFFIX})|{_CAP}[\w'’.-]*[ -](?:{_WORD_SUFFIX}))"
    r"\s+\d{1,4}\s?[a-zA-Z]?(?:[-/]\d{1,4}[a-zA-Z]?)?(?!\w)"
)
# Postcode and city after a continental street: "10115 Berlin", "D-80331 München",
# "1012 AB Amsterdam", "114 55 Stockholm", "1010 Wien".
_CONTINENTAL_TAIL = (
    rf"(?:,?\s+(?:[A-Z]{{1,2}}-)?(?:\d{{4}}\s?[A-Z]{{2}}|\d{{3}} \d{{2}}|\d{{4,5}})\s+{_CITY})?"
)
# French, Belgian, Swiss French: the number first, "12 rue de la Paix, 75002 Paris".
_FR_STREET = (
    r"(?<![\w.,/$€£-])\d{1,4}(?:\s?(?:bis|ter|[a-c])\b)?,?\s+"
    r"(?i:rue|avenue|av\.|boulevard|bd|place|allée|allee|impasse|chemin|quai|route|cours|square|"
    r"passage|rond-point|voie|faubourg)\s+"
    rf"(?:(?:de la|de l['’]|du|des|de|d['’]|la|le|les)\s*)?{_CAP}[\w'’-]*"
    rf"(?:[ -](?:(?:de la|du|des|de|d['’]|la|le)\s*)?{_CAP}[\w'’-]*){{0,3}}"
)
_FR_TAIL = rf"(?:,?\s+(?:[A-Z]{{1,2}}-)?\d{{4,5}}\s+{_CITY}(?:\s+(?:Cedex|CEDEX)(?:\s+\d+)?)?)?"
# Italian, Spanish, Portuguese, Polish: the street word first, the number after the name,
# "Via Roma 12", "Calle de Alcalá, 45", "Rua Augusta, 100", "ul. Kwiatowa 5".
_SOUTH_STREET = (
    r"(?<![\w-])(?i:via|viale|piazza|piazzale|corso|largo|vicolo|calle|c/|avenida|avda\.|"
    r"plaza|paseo|carrera|rua|travessa|alameda|ul\.|ulica|al\.|aleja)\s*"
    r"(?:(?:de la|de|del|della|dei|delle|do|da|dos|das|di)\s+)?"
    rf"{_CAP}[\w'’.-]*(?:\s+(?:(?:de|del|di|da|do)\s+)?{_CAP}[\w'’.-]*){{0,3}},?\s+"
    r"(?:n[º°o.]\s*)?\d{1,4}[a-zA-Z]?(?:/\d{1,4})?(?!\w)"
)
_SOUTH_TAIL = rf"(?:,?\s+(?:\d{{5}}(?:-\d{{3}})?|\d{{4}}-\d{{3}}|\d{{2}}-\d{{3}})\s+{_CITY})?"
_PO_BOX = (
    r"\b(?:P\.?\s?O\.?\s?Box|Post\s+Office\s+Box|Postfach|Bo[iî]te\s+postale|"
    r"Apartado(?:\s+de\s+correos)?|Casella\s+postale|Caixa\s+postal)\s*#?\s*\d{1,7}"
)
# US military mail: "PSC 1234, Box 5678, APO AA 34001", "USS Nimitz, FPO AP 96620".
_MILITARY = (
    r"\b(?:(?:PSC|CMR|Unit)\s+\d{3,5},?\s+Box\s+\d{1,5}(?:,?\s+(?:APO|FPO|DPO),?\s+A[AEP]\s+"
    rf"{_US_ZIP})?|(?:USNS|USS)\s+{_CAP}\w+(?:\s+{_CAP}\w+){{0,2}},?\s+(?:APO|FPO|DPO),?\s+"
    rf"A[AEP]\s+{_US_ZIP}|(?:APO|FPO|DPO),?\s+A[AEP]\s+{_US_ZIP})(?![\w-])"
)

STREET_ADDRESS = re.compile(
    rf"{_MILITARY}|{_PO_BOX}{_EN_TAIL}|{_EN_STREET}{_EN_TAIL}|{_FR_STREET}{_FR_TAIL}"
    rf"|{_CONTINENTAL_STREET}{_CONTINENTAL_TAIL}|{_SOUTH_STREET}{_SOUTH_TAIL}"
)

# A postcode on its own: UK and Canadian ones have a shape nothing else has; a US ZIP needs its
# state before it, any other needs a word that says so. The value is group ``v``.
POSTCODE = re.compile(
    rf"(?<![\w-])(?P<v>{_UK_POSTCODE}|{_CA_POSTCODE})(?![\w-])"
    rf"|(?<![\w-])(?:{_REGIONS}),?\s+(?P<v2>{_US_ZIP})(?![\w-])"
    r"|(?i:\b(?:zip(?:\s?code)?|post\s?code|postal\s+code|plz|cep|code\s+postal|cap)\b)"
    r"\W{0,3}(?P<v3>(?=[\w -]{0,9}\d)[A-Za-z0-9]{2,5}(?:[ -][A-Za-z0-9]{2,4})?)(?![\w-])"
)

DRIVER_LICENSE = re.compile(
    r"(?i:\b(?:driver['’]?s?['’]?\s+licen[cs]e|driving\s+licen[cs]e|drivers?\s+lic\.?|"
    r"licen[cs]e\s+(?:no|nr|number|num|#)|DL|D\.L\.|f[üu]hrerschein(?:nummer)?|"
    r"permis\s+de\s+conduire|carn[eé]\s+de\s+conducir|patente(?:\s+di\s+guida)?))"
    r"(?i:\W{0,3}(?:no|nr|num|number|n[°º])\b\.?)?[\s:#.-]{0,4}"
    r"(?P<v>(?=[A-Za-z]{0,8}\d)[A-Za-z0-9]{1,20}(?:[ -](?=[A-Za-z]{0,3}\d)[A-Za-z0-9]{2,8}){0,4})"
    r"(?![\w-])"
)


def value_span(m: re.Match) -> tuple[int, int]:
    """The value of a labelled match: its first named group that matched, else the match."""
    for name, value in m.groupdict().items():
        if value is not None and name.startswith("v"):
            return m.start(name), m.end(name)
    return m.start(), m.end()


def driver_license_ok(m: re.Match, text: str) -> bool:
    # At least five characters and two digits: "DL 2" is a download count, not a licence.
    value = m.group("v")
    return len(value.replace(" ", "").replace("-", "")) >= 5 and sum(map(str.isdigit, value)) >= 2
