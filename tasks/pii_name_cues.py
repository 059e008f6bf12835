"""The words around a name that say a person is meant, or a thing: titles, cue words before a
name, verbs after one, and the shapes of codes, companies and field labels (tasks.pii_names).
"""

from __future__ import annotations

import re

from tasks.pii_name_lists import TITLES

TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
TITLE = "|".join(sorted(TITLES, key=len, reverse=True))
# Before a name: a title ("Dr.", "Herr"); any capitalized word after one is a name ("Dr. Green").
TITLE_CUE = re.compile(rf"\b(?:{TITLE})\.?\s+$", re.IGNORECASE)
# Before a name: words that introduce, address, quote or relate a person, never a thing; after
# them a word that is a name word (listed, surname-shaped or no everyday English) is a name, in
# any case ("spoke to Ferenc", "thanks zsófia", "per Halvorsen", "signed for by E. Okafor").
STRONG = re.compile(
    r"(?:\b(?:wife|husband|partner|fianc[eé]e?|son|daughter|brother|sister|mother|father|mom|"
    r"mum|dad|grandma|grandpa|grandmother|grandfather|aunt|uncle|cousin|nephew|niece|friend|"
    r"boyfriend|girlfriend|colleague|co-?worker|neighbou?r|roommate|flatmate|landlord|landlady|"
    r"tenant|manager|boss|supervisor|nurse|dentist|lawyer)(?: is| was)?[\s,:]+$|"
    r"\b(?:named|i'?m|i am|dear|hi|hello|hey|"
    r"thanks|thank you|thx|ty|signed|ask for|asked for|asking for|speak to|spoke to|"
    r"speaking to|speak with|spoke with|talk to|talked to|talking to|talk with|chat with|"
    r"chatted with|per|according to|cc|cc'?d|copied|copying|bcc|attn|attention|patient|"
    r"customer|client|employee|"
    r"cardholder|caller|applicant|passenger|recipient|sender|payee|beneficiary|name is|"
    r"name was|name as|names? are|name\s*:|(?:from|to|cc|bcc|contact|kontakt|holder|owner)\s*:|"
    r"(?:signed|sent|submitted|approved|requested|reported|written|created|assigned|opened|"
    r"entered|completed|received|collected|delivered|handled|reviewed|referred|witnessed|"
    r"prepared|issued|authorised|authorized|verified|checked|picked up|left|filed)"
    r"(?: for| in| out| up)? by)[\s,:]+|\b(?:best|cheers|regards|sincerely|yours|love|"
    r"xoxo|thanks|greetings),?\s*\n\s*|\b(?:best|cheers|regards)\s*,\s*)$", re.IGNORECASE)
# Cues too common to admit a name word that is not on a name list ("a gift from Grace", but not
# "a headset from Plantronics").
# Case-sensitive: a capitalized "For" or "With" mid-sentence marks a Title Case headline.
WEAK = re.compile(r"\b(?:with|from|to|for|and|or|by|call|ring|text|email|e-mail|message|tell|"
                   r"reach|call back|ring back|of|ask|asked|"
                   r"told|ping|contact|called|it'?s|this is|member|user|owner|guest|student|"
                   r"resident|driver|agent|assistant|technician|doctor)[\s,:]+$")
# Lower-case words that are English inflections, never a name ("psyched", "spicier").
INFLECTED = re.compile(r"(?:ed|ing|ier|iest|ly|ness|able|ible|ful|less|ous|ive|ment|tion)$")
# Cues that also admit an everyday given name in lower case ("ask for mark."), never a continuing
# word: they ask for a person by name, where a thing rarely follows.
NAMING_CUE = re.compile(
    r"\b(?:named|i'?m|i am|this is|it'?s|my name is|name is|name as|name|ask for|asked for|"
    r"speak to|spoke to|talk to|dear|wife|husband|son|daughter|brother|sister|friend|colleague|"
    r"co-?worker|neighbou?r|boss|manager)[\s,:]+$", re.IGNORECASE)
# After a name: verbs of a person speaking or acting, and "from <department>".
PERSON_AFTER = re.compile(
    r"^(?:\s+(?:has |had |just |also |then |already )?(?:called|rang|phoned|rung|said|says|"
    r"wrote|writes|emailed|e-mailed|texted|messaged|replied|replies|answered|asked|asks|"
    r"mentioned|confirmed|signed|agreed|told|tells|promised|approved|visited|stopped by|"
    r"dropped by|dropped off|picked up|left a|will call|will email|is calling|is on leave|"
    r"is off|is out|was here|complained|explained|insisted|apologi[sz]ed)\b|"
    r"\s+(?:from|in|at) (?:billing|support|accounts?|hr|it|sales|legal|finance|payroll|"
    r"reception|the front desk|customer service|marketing|security|dispatch|the office|"
    r"admin|compliance|logistics|procurement|facilities)\b|"
    r"['’]s (?:wife|husband|son|daughter|mother|father|mom|mum|dad|phone|number|email|address|"
    r"account|desk|office|birthday)\b|,? who\b|\s*<[^<>\s]+@)", re.IGNORECASE)
# After a name or a thing: verbs that need a listed name or a word inside a sentence.
ACTS_AFTER = re.compile(r"^\s+(?:recommended|suggested|thinks|thought|wants|wanted|needs|"
                         r"needed|says so|agrees)\b", re.IGNORECASE)
DETERMINER = re.compile(r"\b(?:the|a|an|my|our|your|their|his|her|its|this|that|these|those|"
                         r"every|any|some|no)\s+$", re.IGNORECASE)
# After a name: the legal form of a company ("Thomsen & Søn ApS", "Hermanos Amo S.L.").
COMPANY_AFTER = re.compile(
    r"^,?\s+(?:&\s+\w+\s+)?(?:Ltd|Limited|Inc|LLC|LLP|GmbH|AG|KG|AB|ApS|A/S|AS|ASA|BV|B\.V\.|NV|"
    r"Oy|Oyj|SpA|S\.p\.A|Srl|S\.r\.l|S\.A|SA|SAS|SARL|S\.L|SL|S\.C|Sp\.|Co\b|Corp|PLC|plc|Pty|"
    r"SE|s\.r\.o|a\.s|e\.V|Group|Holdings?|Partners|& Co|& Sons?|and Sons?)\b")
LABEL = re.compile(r"\b[^\W\d_]+\s*:\s*$")
PLACE_BEFORE = re.compile(r"\b(?:in|at|inside|near|outside|into)\s+$", re.IGNORECASE)
SENTENCE_START = re.compile(r"(?:^|[.!?:;\n\"“(]\s*|\s-\s)$")
