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
    "NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI|AS|MP|PW|FM|MH|AA|AE|AP|"
    "AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC|SK|YT"
)
_US_ZIP = r"\d{5}(?:-\d{4})?"
# Royal Mail's outward code (area, district) and inward code (sector, unit), "SW1A 1AA".
_UK_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]?|GIR) ?\d[ABD-HJLNP-UW-Z]{2}"
# Canada Post: letters D, F, I, O, Q, U never occur, W and Z never first.
_CA_POSTCODE = r"[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z][ -]?\d[ABCEGHJ-NPRSTV-Z]\d"
# A capital, Latin-1 and Latin Extended-A ("Żwirki", "Šťastný"; the block's few lower-case
# letters at a word's start cost nothing here).
_CAP = r"[A-ZÀ-ÖØ-ÞĀ-Ž]"
_CITY = rf"{_CAP}[\w'’.-]*(?:[ -]{_CAP}[\w'’.-]*){{0,2}}"

# Street types after a house number and a name. Any case for the common ones ("12 oak lane");
# the long tail of USPS Publication 28 (appendix C1) and Australia Post (AS 4590) types, which are
# also everyday words ("Cove", "Point", "View"), only written with a capital, after a capitalized
# name ("9074 Brittany Cove"). Words that cannot be part of a street's name stop the match, so
# "3 days on the road" is not an address.
_EN_COMMON = (
    "street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|square|"
    "sq|terrace|terr|way|crescent|cres|close|parkway|pkwy|highway|hwy|circle|cir|trail|trl|"
    "mews|gardens|gdns|grove|alley|plaza|embankment|parade|esplanade|freeway|fwy|expressway|"
    "expy|turnpike|tpke|causeway|broadway"
)
_EN_TYPES = (
    "Access|Alley|Alleyway|Amble|Annex|Approach|Arcade|Bayou|Beach|Bend|Bluffs?|Bottom|Brae|"
    "Branch|Bridge|Brooks?|Brow|Burgs?|Bypass|Byway|Camp|Canyon|Cape|Centers?|Centre|Chase|"
    "Circles?|Circuit|Circus|Cliffs?|Club|Colonnade|Commons?|Concourse|Copse|Corners?|Corso|"
    "Course|Courts?|Courtyard|Coves?|Creek|Crest|Cross|Crossing|Crossroads?|Crossway|Curve|"
    "Cul-de-sac|Dale|Dam|Dell|Divide|Drives?|Driveway|Edge|End|Estates?|Extensions?|Fairway|"
    "Falls?|Ferry|Fields?|Flats?|Follow|Ford|Fords|Forest|Forges?|Forks?|Fort|Front|Garden|"
    "Gate|Gates|Gateway|Glade|Glens?|Grange|Greens?|Groves?|Harbou?rs?|Haven|Heights|Hill|Hills|"
    "Hollow|Inlet|Islands?|Isle|Junctions?|Key|Knolls?|Lakes?|Land|Landing|Laneway|Light|"
    "Link|Loaf|Locks?|Lodge|Lookout|Loop|Mall|Manors?|Meadows?|Mews|Mills?|Mission|"
    "Motorway|Mount|Mountains?|Neck|Nook|Orchard|Outlook|Oval|Overpass|Park|Parkways|Pass|"
    "Passage|Path|Pathway|Pike|Pines?|Plains?|Plaza|Point|Ports?|Prairie|Promenade|Quay|Quays|"
    "Radial|Ramp|Ranch|Rapids?|Reach|Rest|Retreat|Ridges?|Ridgeway|Rise|River|Roads|Route|Row|"
    "Rue|Run|Shoals?|Shores?|Skyway|Springs?|Spurs?|Squares|Station|Strand|Stravenue|Stream|"
    "Streets|Summit|Throughway|Trace|Track|Trafficway|Trailer|Tunnel|Underpass|Unions?|"
    "Valleys?|Vale|Viaduct|View|Villages?|Ville|Vista|Walk|Wall|Well|Wharf|Wynd|Yard|"
    "Via|Anchorage|Artery|Basin|Boardwalk|Centreway|Circlet|Copse|Courtyard|Cruiseway|Cutting|"
    "Deviation|Distributor|Elbow|Entrance|Firetrail|Footway|Foreshore|Formation|Frontage|Gully|"
    "Highroad|Interchange|Intersection|Laneway|Lees|Meander|Parklands|Plateau|Pocket|Quad|"
    "Quadrangle|Quadrant|Ramble|Reserve|Ridgeway|Riverway|Riviera|Roadside|Roadway|Ronde|"
    "Rosebowl|Rotary|Siding|Slope|Strip|Subway|Tarn|Thoroughfare|Tollway|Tor|Towers|Triangle|"
    "Trunkway|Villas|Wade|Walkway"
)
_NOT_A_STREET_WORD = (
    "the|a|an|on|in|at|of|to|for|and|or|with|from|by|my|your|our|his|her|their|is|are|was|"
    "were|be|it|this|that|these|those|days?|weeks?|months?|years?|hours?|minutes?|times?|items?|"
    "people|percent|kids|children|miles?|km|more|less|than|per|each|new|old|other|about|over|"
    "under|into|out|up|down|off|all|some|any|no|not|only|just|also|then|when|so|but|if|as"
)
_UNIT = (r"(?:apt|apartment|suite|ste|unit|flat|floor|fl|level|lvl|studio|room|rm|bldg|"
         r"building|no)\.?\s*#?\s*"
         r"[\w-]{1,6}|#\s*\d[\w-]{0,5}")
_HOUSE_NUMBER = (r"(?<![\w.,/$€£-])\d{1,6}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?,?\s+"
                 r"(?:(?:[NSEW]|North|South|East|West|NE|NW|SE|SW)\.?\s+)?")
_ORDINAL = r"\d+(?:st|nd|rd|th)"
_EN_STREET = (
    rf"(?:(?i:{_UNIT}),?\s+(?:{_HOUSE_NUMBER})?|{_HOUSE_NUMBER})"
    rf"(?:(?:(?!(?i:{_NOT_A_STREET_WORD})\b)(?:[^\W\d_][\w'’.-]*|{_ORDINAL})\s+){{1,4}}?"
    rf"(?i:{_EN_COMMON})\b\.?"
    rf"|(?:{_CAP}[\w'’.-]*|{_ORDINAL})(?:\s+(?:{_CAP}[\w'’.-]*|{_ORDINAL})){{0,3}}\s+"
    rf"(?:{_EN_TYPES}|{_EN_TYPES.upper()})\b)"
    rf"(?:,?\s+(?i:{_UNIT}))?"
)
# After a street: ", Springfield, IL 62704", " London SW1A 1AA", ", Ottawa ON K1A 0B1",
# ", East Rachel, ACT 2008", " Dublin D02 X285".
_AU_STATES = "NSW|VIC|QLD|WA|SA|TAS|ACT|NT"
_EIRCODE = r"(?:[AC-FHKNPRTV-Y]\d{2}|D6W) ?[0-9AC-FHKNPRTV-Y]{4}"
_EN_TAIL = (
    rf"(?:,?\s+(?:{_CITY},?\s+)?(?:(?:{_REGIONS}|{_AU_STATES})\.?,?\s+(?:{_US_ZIP}|\d{{4}}"
    rf"|{_CA_POSTCODE})|{_US_ZIP}|{_UK_POSTCODE}|{_CA_POSTCODE}|{_EIRCODE})(?![\w-])"
    rf"|,\s*{_CITY},?\s+(?:{_REGIONS}|{_AU_STATES})(?![\w-]))?"
)
# German, Austrian, Swiss, Dutch, Belgian, Scandinavian, Finnish: the house number after the
# street word, "Musterstraße 12", "Berliner Str. 5a", "Keizersgracht 123", "Storgatan 4",
# "Havnegade 87", "Haakoninlahdentie 77". A stem of three letters or more before a glued type
# ("Herring 3" is fish; "Spring 2024" is a season), and no year for a number.
_GLUED_SUFFIX = (
    "straße|strasse|str\\.|weg|gasse|platz|allee|ring|damm|ufer|steig|pfad|chaussee|markt|"
    "straat|laan|gracht|plein|kade|singel|dijk|boulevard|dreef|steeg|baan|hof|pad|lei|"
    "gatan|vägen|stigen|gränd|torget|gade|stræde|vej|veien|vegen|gata|gate|alléen|bakken|"
    "berget|bråten|eggen|engen|ekra|faret|flata|gjerdet|grenda|gropa|hagen|haugen|havna|holtet|"
    "høgda|jordet|kollen|kroken|lia|lunden|lyngen|løkka|marka|moen|myra|plassen|ringen|stien|"
    "stranda|stubben|stykket|svingen|tjernet|toppen|tunet|vollen|vika|åsen|roa|røa|skogen|"
    "skrenten|spranget|"
    "tie|katu|kuja|polku|bulevardi"
)
# Written all in lower case ("eichhornring 6" is not caught, "amerikagade 272" is): only the
# street words no everyday word ends in ("during 3 days", "delegate 5 tasks").
_LOWER_GLUED_SUFFIX = (
    "straße|strasse|gasse|platz|allee|straat|gracht|laan|plein|kade|singel|dijk|boulevard|"
    "gatan|vägen|gade|vej|veien|katu|kuja|polku"
)
_WORD_SUFFIX = ("Straße|Strasse|Str\\.|Weg|Gasse|Platz|Allee|Allé|Ring|Damm|Ufer|Chaussee|Markt|"
                "Vej|Gade|Gate|Gata|Veien|vej|gade|gate|bulevardi|[a-zäö]*(?:katu|kuja|polku|tie)")
_CONTINENTAL_STREET = (
    rf"(?<![\w-])(?:(?={_CAP})(?=[^\d\n]{{0,80}}\d)(?:{_CAP}[\w'’.-]*\s+){{0,2}}"
    rf"(?:{_CAP}[\w'’.-]+?(?i:{_GLUED_SUFFIX})|{_CAP}[\w'’.-]*[ -](?:{_WORD_SUFFIX}))"
    rf"|(?=[a-zà-ÿ][\w'’.-]*\s+\d)[a-zà-ÿ][\w'’-]{{2,}}?(?:{_LOWER_GLUED_SUFFIX}))"
    r"\s+(?!(?:19|20)\d\d\b)\d{1,4}\s?[a-zA-Z]?(?:[-/]\d{1,4}[a-zA-Z]?)?(?!\w)"
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
# Italian, Spanish, Portuguese, Polish, and French with the number last: the street type first,
# the number after the name, "Via Roma 12", "Calle de Alcalá, 45", "Rua Augusta, 100",
# "ul. Kwiatowa 5", "rue de Cosendey 8". Types that are also everyday words ("Campo", "Place",
# "Route") count only with a capital.
_SOUTH_ANY_CASE = (
    "via|viale|piazza|piazzale|corso|vicolo|calle|c/|c\\.|avenida|avda\\.|av\\.?|rua|r\\.|"
    "travessa|ul\\.|ulica|al\\.|aleja|plac|pl\\.|rue|avenue|boulevard|allée|chemin|route|quai|"
    "impasse"
)
_SOUTH_CAPITALIZED = (
    "Largo|Strada|Borgo|Contrada|Rotonda|Incrocio|Canale|Callejón|Camino|Carretera|Cañada|"
    "Ronda|Rambla|Pasaje|Paseo|Plaza|Glorieta|Travesía|Urbanización|Alameda|Vía|Acceso|Bajada|"
    "Cuesta|Pasadizo|Praça|Estrada|Rodovia|Campo|Viela|Beco|Ladeira|Quadra|Vila|Fazenda|Lagoa|"
    "Sítio|Trecho|Vereda|Conjunto|Setor|Núcleo|Residencial|Recanto|Osiedle|Place|Square|"
    "Cours|Passage|Stretto|Passarela|Colônia|Chácara|Lago|Morro|Parque|Jardim|Loteamento|"
    "Distrito|Esplanada|Viaduto|Trevo|Feira|Favela|Aeroporto|Estação"
)
# Floor, door or flat after the number: "Piano 3", "Puerta 1", "2º andar", "m. 4", "Top 7".
_SOUTH_UNIT = (
    r"(?:,?\s+(?i:apt\.?|apto\.?|apartamento|appartamento|piano|interno|int\.|scala|puerta|"
    r"piso|planta|escalera|esc\.|bloco|andar|sala|casa|lote|m\.|lok\.|stiege|tür|top)\s*"
    r"[\w/-]{1,4}\b\.?){0,2}"
)
_PARTICLE = (r"(?:de la|de las|de los|de l['’]|de|del|della|dei|delle|do|da|dos|das|di|du|"
             r"des|d['’]|i|y|e)")
_SOUTH_STREET = (
    rf"(?<![\w-])(?:(?i:{_SOUTH_ANY_CASE})|{_SOUTH_CAPITALIZED}|{_SOUTH_CAPITALIZED.upper()})(?=[^\d\n]{{0,100}}(?:\d|S/N))\s*"
    rf"(?:{_PARTICLE}\s*){{0,2}}"
    rf"{_CAP}[\w'’.-]*(?:\s+(?:{_PARTICLE}\s+)?{_CAP}[\w'’.-]*){{0,3}},?\s+"
    r"(?:n[º°o.]\s*)?(?:(?!(?:19|20)\d\d\b)\d{1,4}[a-zA-Z]?(?:/\d{1,4})?(?!\w)|S/N\b)"
    rf"{_SOUTH_UNIT}"
)
_SOUTH_TAIL = rf"(?:,?\s+(?:\d{{5}}(?:-\d{{3}})?|\d{{4}}-\d{{3}}|\d{{2}}-\d{{3}})\s+{_CITY})?"
_PO_BOX = (
    r"\b(?:P\.?\s?O\.?\s?Box|POB|Post\s+Office\s+Box|Postfach|Bo[iî]te\s+postale|"
    r"Apartado(?:\s+de\s+correos)?|Casella\s+postale|Caixa\s+postal)\s*#?\s*\d{1,7}"
)
# US military mail: "PSC 1234, Box 5678, APO AA 34001", "USS Nimitz, FPO AP 96620".
_MILITARY = (
    r"\b(?:(?:PSC|CMR|Unit)\s+\d{3,5},?\s+Box\s+\d{1,5}(?:,?\s+(?:APO|FPO|DPO),?\s+A[AEP]\s+"
    rf"{_US_ZIP})?|(?:USNS|USNV|USS|USCGC)\s+{_CAP}\w+(?:\s+{_CAP}\w+){{0,2}},?\s+(?:APO|FPO|DPO),?\s+"
    rf"A[AEP]\s+{_US_ZIP}|(?:APO|FPO|DPO),?\s+A[AEP]\s+{_US_ZIP})(?![\w-])"
)

# Every form starts a word; saying so first lets the engine leave the other positions at once
# (three times faster on prose).
STREET_ADDRESS = re.compile(
    rf"(?<!\w)(?:{_MILITARY}|{_PO_BOX}{_EN_TAIL}|{_EN_STREET}{_EN_TAIL}|{_FR_STREET}{_FR_TAIL}"
    rf"|{_CONTINENTAL_STREET}{_CONTINENTAL_TAIL}|{_SOUTH_STREET}{_SOUTH_TAIL})"
)

# A postcode on its own: UK and Canadian ones have a shape nothing else has; a US ZIP needs its
# state before it, any other needs a word that says so. The value is group ``v``.
POSTCODE = re.compile(
    rf"(?<![\w-])(?P<v>{_UK_POSTCODE}|{_CA_POSTCODE})(?![\w-])"
    rf"|(?<![\w-])(?:{_REGIONS}),?\s+(?P<v2>{_US_ZIP})(?![\w-])"
    r"|(?i:\b(?:zip(?:\s?code)?|post\s?code|postal\s+code|plz|cep|code\s+postal|cap)\b)"
    r"\W{0,3}(?P<v3>(?=[\w -]{0,9}\d)[A-Za-z0-9]{2,8}(?:[ -][A-Za-z0-9]{2,4})?)(?![\w-])"
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
