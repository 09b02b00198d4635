"""Word lists the PII detectors consult: names, places, common English words, and words that are never PII.

The large generated lists (given names, surnames, common English words) live in lexicon.json beside this
module and are rebuilt with `python -m learnstream.pii.lexicon` (needs Faker and the Debian word lists
wbritish-small + wamerican-small, i.e. SCOWL: "Copyright 2000-2011 by Kevin Atkinson", permissive licence).
The short curated lists are kept here, where a reviewer can read them.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path

LEXICON_PATH = Path(__file__).with_name("lexicon.json")

# Faker locales whose person names feed the gazetteer. The bench also draws names from locales NOT listed
# here (bench/pii_corpus.HELD_OUT_LOCALES) to measure how far the detector generalises beyond its lists.
GAZETTEER_LOCALES = (
    "en_GB", "en_US", "en_IE", "ga_IE", "en_IN", "en_PK", "en_NG", "en_KE", "ig_NG", "yo_NG", "ha_NG",
    "sw", "fr_FR", "de_DE", "es_ES", "es_MX", "it_IT", "pt_BR", "pl_PL", "nl_NL", "tr_TR", "zh_CN", "ja_JP",
)
_SCOWL_FILES = ("/usr/share/dict/british-english-small", "/usr/share/dict/american-english-small")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that look like names or organisations to a model but are never personal data here: weekdays,
# months, holidays, generic services and helplines, clinical vocabulary, medicines, apps, chat slang.
NON_PII_TERMS = _words("""
    monday tuesday wednesday thursday friday saturday sunday mon tue tues wed thu thur thurs fri sat sun
    mondays tuesdays wednesdays thursdays fridays saturdays sundays weekends
    weekday weekend tonight today tomorrow yesterday morning afternoon evening
    january february march april may june july august september october november december
    jan feb apr jun jul aug sep sept oct nov dec
    christmas xmas easter eid diwali ramadan hanukkah passover halloween thanksgiving valentine valentines
    bonfire new year years boxing mothers fathers bank holiday holidays
    nhs gp gps cbt dbt emdr act iapt camhs cmht crisis a&e ae icu itu ward 111 999 samaritans shout mind
    rethink childline nspcc papyrus sane calm refuge relate cruse aa na dwp hmrc pip esa jobcentre ofsted
    universal credit citizens advice police ambulance paramedic paramedics hospital surgery pharmacy
    anxiety depression ptsd cptsd ocd adhd add asd bpd eupd gad phq phq9 gad7 bipolar schizophrenia psychosis
    autism autistic insomnia panic ssri ssris snri sertraline citalopram escitalopram fluoxetine prozac
    mirtazapine venlafaxine duloxetine propranolol diazepam lorazepam zopiclone quetiapine olanzapine
    aripiprazole lithium lamotrigine amitriptyline paroxetine trazodone melatonin pregabalin gabapentin
    naproxen ibuprofen paracetamol codeine co-codamol tramadol xanax valium zoloft lexapro wellbutrin
    bupropion methylphenidate ritalin elvanse concerta antidepressant antidepressants covid lockdown
    mindfulness ect tms psychiatrist psychologist counsellor counselor therapist psychotherapist
    dissociation derealisation depersonalisation self-harm selfharm suicidal rumination
    whatsapp instagram insta facebook fb tiktok snapchat twitter youtube netflix zoom skype facetime
    reddit discord spotify headspace google iphone android uber deliveroo
    ok okay lol tbh idk omg gonna wanna gotta kinda sorta dunno yeah yep nope cos coz bc pls plz thx btw
    imo irl ngl smh fml wtf hmm ugh meh haha hahaha x xx xxx mum mam mom nan nana gran grandad uni telly
    dad daddy mummy mommy grandma grandpa granny grandmother grandfather auntie aunty sis bro
    innit bruv mate ya u ur im ive dont cant wont didnt doesnt isnt wasnt havent couldnt shouldnt
    wouldnt hasnt hadnt arent werent mustnt neednt thats whats theres hes shes theyre youre id ill english british welsh scottish irish uk
    britain england scotland wales europe
""")

# Real UK places (cities, towns, regions, London areas) and a few world cities. Faker's UK towns are
# invented ("Singhside"), so names.py also recognises "<name> + town suffix" shapes.
PLACES = _words("""
    london manchester birmingham leeds liverpool sheffield bristol newcastle nottingham leicester coventry
    bradford hull stoke wolverhampton derby southampton portsmouth plymouth brighton hove reading
    luton bolton bournemouth norwich swindon swansea cardiff newport edinburgh glasgow aberdeen dundee
    inverness stirling perth belfast derry lisburn york oxford cambridge exeter gloucester worcester
    hereford chester lancaster preston blackpool blackburn burnley wigan warrington stockport oldham
    rochdale salford huddersfield wakefield halifax doncaster rotherham barnsley middlesbrough sunderland
    gateshead darlington durham carlisle kendal harrogate scarborough lincoln grimsby peterborough
    ipswich colchester chelmsford southend basildon watford stevenage keynes northampton
    kettering bedford oxfordshire slough maidenhead guildford woking crawley horsham worthing eastbourne
    hastings canterbury maidstone margate dover folkestone ashford tunbridge gillingham chatham dartford
    croydon bromley lewisham hackney islington camden brixton peckham tottenham walthamstow stratford
    ealing hounslow harrow wembley enfield barnet ilford romford woolwich greenwich wimbledon kingston
    richmond twickenham sutton lambeth southwark wandsworth clapham battersea chelsea kensington fulham
    hammersmith westminster shoreditch dalston stoke-on-trent telford shrewsbury stafford walsall dudley
    solihull nuneaton rugby warwick leamington cheltenham stroud taunton yeovil torquay truro penzance
    falmouth barnstaple salisbury winchester basingstoke andover aldershot farnborough poole weymouth
    dorchester wrexham bangor llandudno aberystwyth carmarthen llanelli merthyr pontypridd barry
    kilmarnock paisley motherwell hamilton livingston falkirk kirkcaldy dunfermline ayr dumfries
    yorkshire lancashire kent essex surrey sussex devon cornwall somerset dorset norfolk suffolk cumbria
    northumberland merseyside cheshire shropshire staffordshire derbyshire nottinghamshire lincolnshire
    leicestershire warwickshire gloucestershire wiltshire hampshire berkshire buckinghamshire
    hertfordshire bedfordshire cambridgeshire northamptonshire midlands fife lothian antrim
    dublin cork galway paris berlin madrid rome lisbon amsterdam brussels warsaw krakow bucharest sofia
    istanbul lagos abuja accra nairobi kampala harare johannesburg durban cairo karachi lahore
    islamabad mumbai delhi bangalore chennai kolkata dhaka sylhet colombo kabul tehran baghdad dubai
    riyadh beijing shanghai tokyo seoul manila jakarta sydney melbourne toronto
""")

# Places that are also everyday words ("reading", "bath"): named only with a place cue ("live in Reading").
PLACES_THAT_ARE_WORDS = _words("bath reading wells deal march poole barry rugby hull derby ayr sale")

# Endings of English place names ("Middleton", "Singhside"); a word made of a known name plus one of
# these is taken as a place.
TOWN_SUFFIXES = (
    "town", "ton", "land", "ville", "berg", "burgh", "borough", "bury", "view", "port", "mouth", "stad",
    "furt", "chester", "fort", "haven", "side", "shire", "ford", "field", "ham", "wick", "ley", "stead",
)


@dataclass(frozen=True)
class Lexicon:
    given_names: frozenset[str]  # casefolded first names from many cultures, with accent-free variants
    surnames: frozenset[str]  # casefolded family names, same sources
    common_words: frozenset[str]  # casefolded everyday English words (SCOWL small) and NON_PII_TERMS

    @cached_property
    def names(self) -> frozenset[str]:
        return self.given_names | self.surnames


def fold(word: str) -> str:
    """Casefold and drop accents, so "Zsófia", "ZSOFIA" and "zsofia" meet."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


@cache
def load_lexicon() -> Lexicon:
    data = json.loads(LEXICON_PATH.read_text(encoding="utf-8"))
    return Lexicon(
        given_names=frozenset(data["given_names"]),
        surnames=frozenset(data["surnames"]),
        common_words=frozenset(data["common_words"]) | NON_PII_TERMS,
    )


def _faker_names(locale: str, kind: str) -> set[str]:
    """Every name a Faker locale can produce for kind "first" or "last" (romanized forms where they exist)."""
    from faker import Faker

    provider = Faker(locale).provider("faker.providers.person")
    names: set[str] = set()
    for attribute in dir(provider):
        if attribute.startswith(f"{kind}_") and attribute.endswith(("names", "names_male", "names_female")):
            value = getattr(provider, attribute)
            names.update(value.keys() if isinstance(value, dict) else value)
    tokens = {fold(token).replace("'", "") for name in names for token in name.replace("-", " ").split()}
    return {token for token in tokens if len(token) > 1 and token.isalpha() and token.isascii()}


def build() -> None:
    """Regenerate lexicon.json from Faker's person providers and SCOWL's small English word lists."""
    common = set()
    for path in _SCOWL_FILES:
        common.update(word for word in Path(path).read_text(encoding="utf-8").split() if word.isalpha() and word.islower())
    given = set().union(*(_faker_names(locale, "first") for locale in GAZETTEER_LOCALES))
    surnames = set().union(*(_faker_names(locale, "last") for locale in GAZETTEER_LOCALES))
    data = {"given_names": sorted(given), "surnames": sorted(surnames), "common_words": sorted(common)}
    LEXICON_PATH.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    print(f"{LEXICON_PATH}: {len(given)} given names, {len(surnames)} surnames, {len(common)} common words")


if __name__ == "__main__":
    build()
