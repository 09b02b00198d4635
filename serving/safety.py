"""Crisis detection: a message that indicates risk of suicide, self-harm or abuse is never answered by a model.

How it works, in three steps:

1. Normalization. The text is case-folded, accents are stripped, "leetspeak" inside words is undone (``k1ll``),
   runs of three or more repeated letters are squeezed (``killlll``), contractions and chat slang are expanded
   (``dont`` -> ``do not``, ``wanna`` -> ``want to``, ``kms`` -> ``kill myself``, ``sewer slide`` -> ``suicide``)
   and sentence punctuation becomes a ``.`` token, so a phrase never matches across two sentences.
2. Fuzzy keywords. Each remaining token is compared with a small vocabulary of risk words. A token that equals
   a risk word once doubled letters are ignored (``kil`` = ``kill``) is replaced by it, and so is a token one edit
   (two for words of eight letters or more) away from one of a few long, often misspelt risk words (``sucide``,
   ``myslef``). People rarely misspell the first letter, so a fuzzy match must keep it; that alone stops
   ``willing`` becoming ``killing``. Real words that close to a risk word (``amusing``, ``overdue``, ``strange``)
   are never corrected.
3. Patterns. Regular expressions over the normalized text describe risk as phrases, not single words: a risk
   word only counts in a risky construction (``want to die``, not ``dying to see``; ``kill myself``, not ``killing
   me``), and lookaheads rule out the common everyday uses (``cut myself a slice``, ``hurt myself at the gym``,
   ``he beat me at chess``, ``no point going on holiday``).

It deliberately errs towards flagging: negations are not interpreted ("I'm not suicidal, but ..." is flagged),
because a false alarm costs a kind message with helplines while a miss could cost a life. Patterns only know
the phrasings someone wrote down: the phrase sets in tests/test_safety.py measure both sides, and every miss
seen in practice belongs in them.
"""

import functools
import re
import unicodedata
from dataclasses import dataclass

from learnstream.textnorm import fold
from serving import safety_classifier


@dataclass(frozen=True)
class SafetyVerdict:
    crisis: bool  # flagged (a crisis or a check-in): never answered by a model
    category: str | None  # the rules' ("suicide" | "self_harm" | "abuse") or the classifier's; None when not flagged
    score: float = 0.0  # the classifier's crisis probability (1.0 when the rules fired)
    layer: str | None = None  # "rules" | "classifier" | "session" | "remote"; None when not flagged
    check_in: bool = False  # between the check-in and the crisis threshold: a gentle check-in, not the crisis text

    @property
    def reply(self) -> str:
        return CHECK_IN_REPLY if self.check_in else CRISIS_REPLY


NO_CRISIS = SafetyVerdict(crisis=False, category=None)

CRISIS_REPLY = (
    "I'm really sorry you're going through this, and I'm glad you told me. You deserve support from a person "
    "right now, and you don't have to face this alone.\n"
    "- If you are in immediate danger or have hurt yourself, call 999 or go to A&E now.\n"
    "- Samaritans are there day and night: call free on 116 123 or email jo@samaritans.org.\n"
    "- For urgent mental health help, call NHS 111 and choose the mental health option.\n"
    "- If you'd rather text, text SHOUT to 85258 for free, confidential support, 24/7.\n"
    "- If someone is hurting you, the National Domestic Abuse Helpline is free on 0808 2000 247, 24 hours a day."
)

CHECK_IN_REPLY = (
    "Thank you for telling me. I want to check in with you: how are you feeling in yourself right now, and are "
    "you safe? If things feel too much, you don't have to wait: Samaritans are free day and night on 116 123, "
    "you can text SHOUT to 85258, or call NHS 111 and choose the mental health option. In an emergency call 999."
)

# --- step 1: normalization tables -------------------------------------------------------------------------------

_TOKEN_REPLACEMENTS = {
    # contractions, after apostrophes are dropped
    "dont": "do not", "doesnt": "does not", "didnt": "did not", "cant": "can not", "cannot": "can not",
    "couldnt": "could not", "wont": "will not", "wouldnt": "would not", "shouldnt": "should not",
    "isnt": "is not", "arent": "are not", "wasnt": "was not", "werent": "were not", "havent": "have not",
    "hasnt": "has not", "aint": "am not", "im": "i am", "ive": "i have", "hes": "he is", "shes": "she is",
    "theyre": "they are", "youre": "you are", "whats": "what is", "theyd": "they would", "everyones": "everyone is",
    # chat spelling
    "wanna": "want to", "wana": "want to", "gonna": "going to", "gotta": "got to", "u": "you", "ppl": "people",
    "every1": "everyone", "some1": "someone", "no1": "no one", "noone": "no one", "any1": "anyone",
    "anymor": "anymore", "bf": "boyfriend", "gf": "girlfriend", "mam": "mum", "mom": "mum",
    # crisis slang and euphemisms
    "kms": "kill myself", "unalive": "kill", "unaliving": "killing", "unalived": "killed",
    "selfharm": "self harm", "selfharming": "self harming", "od": "overdose", "oding": "overdosing",
    "oded": "overdosed", "sewerslide": "suicide", "suicidial": "suicidal",
}
_PHRASE_REPLACEMENTS = {
    "my self": "myself", "sewer slide": "suicide", "self delete": "kill myself", "un alive": "kill",
    "any more": "anymore", "hit me up": "contacted me", "hits me up": "contacts me", "hitting me up": "contacting me",
}
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_TOKEN = re.compile(r"[a-z0-9@$']+|[.!?;:,]")
_SENTENCE_BREAK = frozenset(".!?;:,")

# --- step 2: fuzzy keywords --------------------------------------------------------------------------------------

_RISK_WORDS = frozenset("""
    suicide suicidal myself kill kills killing killed die dying dead overdose overdosing overdosed harm harming
    hurt hurts hurting cut cutting self wrists hang hanging noose pills tablets abuse abused abusing abusive
    hit hits hitting beat beats beating rape raped strangle strangles strangled choke chokes choked threatens
    threatened violence bleed burn burning starve starving anymore better without alive exist living
""".split())
# Long risk words that people often misspell: the only targets of edit-distance matching (short words such as
# "kill" or "die" have too many real neighbours: "will", "dye").
_FUZZY_RISK_WORDS = tuple("""
    suicide suicidal myself overdose overdosing killing harming hurting cutting abusing abusive strangle
    strangled threatened violence
""".split())
# Real words one edit from a fuzzy risk word (with the same first letter): never "corrected" into one.
_REAL_WORDS_NEAR_RISK_WORDS = frozenset("""
    amusing overdone overdue overdoes strange stranger strangely harping hurling hunting hurtling violent
""".split())


def _squeeze_all(word: str) -> str:
    return re.sub(r"(.)\1+", r"\1", word)


_RISK_WORDS_BY_SKELETON = {_squeeze_all(word): word for word in _RISK_WORDS}


def _edit_distance_at_most(a: str, b: str, limit: int) -> int | None:
    """Optimal-string-alignment distance (transpositions count once) if it is <= limit, else None."""
    if abs(len(a) - len(b)) > limit:
        return None
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return None
        previous2, previous = previous, current
    return previous[-1] if previous[-1] <= limit else None


def _fuzzy_risk_word(token: str) -> str | None:
    if token in _REAL_WORDS_NEAR_RISK_WORDS:
        return None
    best: tuple[int, str] | None = None
    for word in _FUZZY_RISK_WORDS:
        if word[0] != token[0]:
            continue
        limit = 2 if len(word) >= 8 and len(token) >= 7 else 1
        distance = _edit_distance_at_most(token, word, limit)
        if distance is not None and (best is None or distance < best[0]):
            best = (distance, word)
    return best[1] if best else None


@functools.lru_cache(maxsize=8192)
def _canonical_token(token: str) -> str:
    """One raw token -> one or more normalized words (space separated)."""
    token = re.sub(r"'ll$", " will", token).replace("'", "")  # "i'll" (without it, "ill" is a word)
    if token in _TOKEN_REPLACEMENTS:
        return _TOKEN_REPLACEMENTS[token]
    if re.search(r"[a-z]", token):
        token = token.translate(_LEET)
    token = re.sub(r"(.)\1\1+", r"\1\1", token)
    if token in _TOKEN_REPLACEMENTS:
        return _TOKEN_REPLACEMENTS[token]
    if token in _RISK_WORDS or not token.isalpha():
        return token
    if token.endswith("myself") and len(token) > len("myself"):  # "killmyself", "hurtmyself"
        return f"{_canonical_token(token.removesuffix('myself'))} myself"
    return _RISK_WORDS_BY_SKELETON.get(_squeeze_all(token)) or _fuzzy_risk_word(token) or token


def normalize(text: str) -> str:
    """The text as the patterns see it: canonical words separated by spaces, sentence breaks as '.'."""
    folded = unicodedata.normalize("NFKD", fold(text, confusables=True).text.casefold())
    folded = "".join(char for char in folded if not unicodedata.combining(char))
    folded = folded.replace("\u2019", "'").replace("\u2018", "'").replace("-", " ").replace("_", " ")
    words = ("." if token in _SENTENCE_BREAK else _canonical_token(token) for token in _TOKEN.findall(folded))
    normalized = f" {' '.join(words)} "
    for phrase, replacement in _PHRASE_REPLACEMENTS.items():
        normalized = normalized.replace(f" {phrase} ", f" {replacement} ")
    return normalized.strip()


# --- step 3: patterns ------------------------------------------------------------------------------------------


def _words(*alternatives: str) -> str:
    return "(?:" + "|".join(alternatives) + ")"


_ANYMORE = _words("anymore", "any longer", "no more", "no longer")
_CLAUSE_END = r"(?= \.|$)"
_PILLS = _words("pills", "tablets", "meds", "medication", "medicine", "paracetamol", "painkillers", "sleeping pills")
_INTENT = _words(
    "want to", "wanted to", "wanting to", "going to", "plan to", "planning to", "tempted to", "thinking about",
    "thinking of", "thought about", "thought of", "urge to", "urges to", "need to", "needed to", "keep",
    "kept", "been", "started", "start", "stop", "stopped", "could", "might", "will",
)
_SELF_INJURY = _words(
    "hurt", "hurting", "harm", "harming", "harmed", "cut", "cutting", "burn", "burning", "burnt", "burned",
    "scratch", "scratching", "punch", "punching", "hit", "hitting", "starve", "starving", "starved", "bruise",
    "bruising",
)
_FIGURATIVE_OBJECT = _words("out", "off", "short", "free", "up", "a", "an", "some", "another", "loose")
_ACCIDENT = _words(
    "accidentally", "by accident", "playing", "while", "during", "lifting", "running", "shaving", "cooking",
    "at the gym", "at work", "in the gym", "on the (?:oven|stove|hob|kettle|iron|door|pan)",
)
_FIGURATIVE_KILLING = _words(
    "laughing", "with laughter", "trying to", "at work", "with work", "working", "tripping", "falling", "slipping",
    "on the stairs", "in the foot", "to meet", "to finish", "to keep up", "to pay", "to pass", "to hit",
)
_MISHAP = r"when i (?:fell|slipped|tripped|was (?:running|playing|cooking|lifting|training|working))"
_NOT_SELF_INJURY = _words(_FIGURATIVE_OBJECT, _ACCIDENT, _MISHAP, "at", "on(?! purpose)", "in")
_RELATION = _words(
    "husband", "wife", "partner", "boyfriend", "girlfriend", "ex", "fiance", "fiancee", "dad", "father",
    "mum", "mother", "parents", "stepdad", "stepfather", "stepmum", "stepmother", "step dad", "step mum",
    "brother", "sister", "uncle", "aunt", "auntie", "grandad", "grandfather", "grandma", "cousin", "carer",
    "teacher", "coach", "boss", "son", "daughter", "flatmate", "housemate", "family",
)
_ABUSER = _words("he", "she", "they", "someone", "somebody", rf"my (?:[a-z]+ )?{_RELATION}")
_HABITUALLY = (
    r"(?: (?:always|sometimes|often|still|keeps|kept|has|had|have|been|is|was|are|were|used to|would|will|even|"
    r"also|just|then|now|again|constantly|regularly|repeatedly|started|starts|tried to|tries to|physically))*"
)
_ASSAULT = _words(
    "hit", "hits", "hitting", "beat", "beats", "beating", "punch", "punches", "punched", "punching", "kick",
    "kicks", "kicked", "kicking", "slap", "slaps", "slapped", "slapping", "choke", "chokes", "choked",
    "choking", "strangle", "strangles", "strangled", "strangling", "abuse", "abuses", "abused", "abusing",
    "rape", "rapes", "raped", "raping", "molest", "molests", "molested", "molesting", "assault", "assaults",
    "assaulted", "batter", "batters", "battered", "throttle", "throttles", "throttled", "shove", "shoves",
    "shoved", "smack", "smacks", "smacked", "hurts", "hurting", "touches", "touching", "spits on", "spat on",
)
_NOT_ASSAULT = _words(
    "back", "at", "out", "off", "to it", "to the", "in (?:a|the) (?:game|match|race|quiz|final)",
    "in (?:his|her|their) sleep", "with (?:the|some|this|that|a) (?:news|question|joke|truth|idea|bill|fine)",
    "on the back", "with (?:his|her|their) (?:words|comments|remarks|silence)",
)

# The word as a topic, not a state: coursework, news, prevention work. Only the rules step aside here; the
# classifier still scores the message.
_TOPIC_MENTION = _words(
    "squad", "bomb", "bomber", "bombers", "bombing", "bombings", "attack", "prevention", "awareness", "statistics",
    "stats", "rates", "research", "training", "in teenagers", "among", "in young people",
)

_PATTERNS: dict[str, tuple[str, ...]] = {
    "suicide": (
        # saying it
        rf"\bsuicid(?:e|al)\b(?! {_TOPIC_MENTION}\b)",
        rf"\b{_words('kill', 'kills', 'killing', 'killed', 'hang', 'hanging', 'hanged', 'shoot', 'shooting')} "
        rf"myself\b(?! {_FIGURATIVE_KILLING})",
        rf"\b{_words('top', 'topping', 'off', 'offing', 'end', 'ending', 'drown', 'poison', 'gas')} myself\b"
        rf"(?! {_words('up', 'out', 'in', 'with', 'on', 'laughing')})",
        r"\bdo myself in\b",
        r"\b(?:end|ending|ended|take|taking|took) my (?:own )?life\b",
        r"\b(?:end|ending) (?:things|it) (?:permanently|for good|forever)\b",
        r"\b(?:end|ending) (?:it all|everything|it tonight|it today|it now|it for good)\b(?! with\b)",
        rf"\b(?:want|going|plan|planning|ready|decided) to end it{_CLAUSE_END}",
        r"\bto overdose\b|\b(?:ways|way|how|methods) to (?:die|kill myself|end my life|end it)\b",
        # wishing to be dead, or not to be
        r"\b(?:want|wanted|wanting|wish|ready|deserve|deserving|prepared) to (?:die|be dead)\b"
        r"(?! (?:my|her|his|their|the|it)\b)",
        r"\bwish (?:i|i could|i would) (?:just )?(?:die|be dead|was dead|were dead|could die)\b",
        r"\bi should (?:just )?(?:die|be dead)\b",
        r"\bbetter off dead\b|\brather be dead\b(?! than)",
        r"\bwish i (?:was not|were not|was never) (?:alive|born)\b|\bwish i (?:had|was|were) never (?:been )?born\b",
        r"\b(?:wish i|hope i|want to) (?:would not|will not|do not|did not|never|not) wake up\b",
        r"\b(?:do not|never) want to wake up\b|\bgo to sleep and (?:never|not) wake up\b",
        r"\b(?:wish i could|want to|going to) (?:go to )?(?:sleep|fall asleep) (?:forever|and never wake up"
        r"|and not wake up)\b",
        r"\bwant (?:it all|everything|all of it|my life) to (?:end|be over|stop)\b",
        r"\b(?:the pain|it|this|everything) to (?:end|stop) (?:forever|for good|permanently)\b",
        r"\b(?:do not|never) want to (?:be alive|exist|stay alive)\b",
        rf"\b(?:do not|never) want to (?:live|go on|carry on|be here|be around)(?: like this)?"
        rf"{_words(_CLAUSE_END, ' ' + _ANYMORE, ' in this world', ' on this earth')}",
        r"\b(?:wish i did not|want to stop|want to not|wish i could stop) exist(?:ing)?\b",
        r"\b(?:want to|wish i could|going to|ready to) stop (?:living|existing|breathing)\b",
        r"\bdisappear (?:forever|for good|and never come back)\b",
        # others better off, no point, no way out
        r"\b(?:better|happier|easier) (?:off )?without me\b",
        r"\bbetter off (?:not existing|not being here|not alive|not around|gone)\b",
        r"\b(?:care|cares|notice|miss me|matter|matters|be happier|be better off|be relieved) (?:if|whether) i "
        r"(?:live or die|die|died|am dead|was dead|were dead|was gone|were gone|disappeared|was not here|were not "
        r"here|was not around|were not around)\b",
        r"\bwhat is the point (?:of |in )?(?:living|being alive|life|going on|carrying on)\b",
        r"\bpoint (?:in|of) (?:living|being alive|staying alive|existing)\b",
        rf"\bno point (?:in )?(?:living|being alive|being here|me being here|existing|staying alive|life"
        rf"|(?:going on|carrying on){_words(_CLAUSE_END, ' ' + _ANYMORE, ' like this', ' with life')})",
        r"\bno reason (?:for me )?to (?:live|go on|keep going|stay alive|be alive|be here|carry on)\b",
        r"\bnothing (?:left )?to live for\b|\bnot worth living\b|\blife (?:is|feels|seems) not worth it\b",
        rf"\bcan not (?:go on|carry on|keep going) {_ANYMORE}|\bcan not (?:go on|keep|carry on) living\b",
        r"\bno way out (?:except|but|other than)\b",
        r"\bway out (?:is|would be) (?:to die|death|dying|suicide|to end it)\b",
        r"\b(?:will not|am not going to|not going to) be (?:around|here) (?:much longer|for much longer|for long"
        r"|anymore)\b",
        r"\bnot (?:think i will |going to )?be alive (?:next|tomorrow|by|much longer|for long|this time)\b",
        # means
        r"\b(?:take|taking|took|taken|have|had|do|doing|did) (?:an |a )?overdose\b",
        rf"\boverdos(?:e|ed|ing) on (?:my |the |some |all )?(?:{_PILLS}|drugs|insulin|heroin|them|it)\b",
        rf"\b(?:want to|going to|thinking about|thinking of|tempted to|could|should just|wish i could|plan to|"
        rf"planning to) (?:take|swallow|taking|swallowing) all (?:of )?(?:my |the )?{_PILLS}\b",
        rf"\b(?:take|taking|took|swallow|swallowing|swallowed) (?:a whole bottle|a bottle|a box|a packet|packets"
        rf"|boxes|a handful|handfuls|loads|a lot|lots|a bunch|all) of (?:my |the )?{_PILLS}"
        rf"(?! (?:a day|each day|every day))",
        rf"\btoo many (?:of my |of the )?{_PILLS}\b",
        rf"\b(?:took|taken|swallowed|take|taking|swallow) [1-9][0-9]+ (?:of my |of the )?{_PILLS}\b",
        rf"\b(?:stockpiling|stockpiled|saving up|hoarding) (?:my |the )?{_PILLS}\b",
        rf"\b{_PILLS} (?:saved up|stockpiled|hidden away|put aside)\b",
        r"\bjump(?:ing)? (?:off|from) (?:a|the) (?:[a-z]+ ){0,2}"
        r"(?:bridge|building|roof|cliff|balcony|car park|tower)\b",
        r"\b(?:jump|jumping|step|stepping|throw myself|walk|lie down) in front of (?:a|the) "
        r"(?:train|bus|lorry|truck|car)\b",
        r"\b(?:drive|driving|crash|crashing) (?:my car )?(?:into|off) (?:a|the) "
        r"(?:wall|tree|bridge|cliff|lorry|truck)\b",
        r"\bnoose\b|\brope (?:ready|to hang|for myself|around my neck)\b",
        r"\bslit (?:my )?(?:wrists|wrist|throat)\b|\bgun to my head\b",
        # preparations and farewells
        r"\b(?:made|make|have|got) a plan to (?:end|kill|die)\b",
        r"\b(?:a|my) plan\b[^.]{0,40}\bdo it (?:tonight|today|soon|this weekend|tomorrow)\b",
        r"\b(?:this is|saying|say|said) (?:my )?goodbye (?:to everyone|forever)\b|\bthis is goodbye\b",
        r"\b(?:said|say|saying) my goodbyes\b",
        r"\b(?:suicide|goodbye) (?:note|letter|letters|notes)\b",
        r"\b(?:letters?|notes?|messages?) to [^.]{0,30}(?:saying|to say) goodbye\b",
        r"\bgiving away (?:all )?my (?:things|stuff|belongings|possessions)\b",
        r"\b(?:wish|hope|want) (?:someone|somebody|something|a car|a bus|a train) (?:would|will|to) (?:just )?"
        r"(?:kill|hit) me\b",
    ),
    "self_harm": (
        r"\bself (?:harm|harming|harmed|injury|injuring|injure|injured|mutilation|mutilate|mutilating)\b"
        rf"(?! {_TOPIC_MENTION}\b)",
        rf"(?<!fell and )(?<!slipped and )(?<!tripped and )\b{_SELF_INJURY} myself\b(?! {_NOT_SELF_INJURY}\b)",
        rf"\b{_INTENT} (?:to )?{_SELF_INJURY} myself\b(?! {_words(_FIGURATIVE_OBJECT, _ACCIDENT)}\b)",
        r"\b(?:cut|cutting|slit|slitting|slash|slashing|carve|carving|burn|burning) (?:my|both my|into my) "
        r"(?:wrist|wrists|arm|arms|leg|legs|thigh|thighs|skin|stomach)\b"
        r"(?! (?:on|accidentally|by accident|while|when|shaving|cooking)\b)",
        r"\bpunish(?:ing)? myself (?:by|with) (?:cutting|burning|hurting|hitting|starving|scratching)\b",
        rf"\bcutting again\b|\b(?:been|started|start|stop|keep) cutting{_CLAUSE_END}",
        r"\b(?:relapsed|relapse|relapsing) (?:on |into |with )?(?:self harm|cutting)\b",
        r"\burges? to (?:cut|self harm|burn|hurt myself|harm myself)\b(?! (?:back|down|out|ties|costs|corners|my "
        r"hair|it|them|him|her)\b)",
        r"\b(?:make|made|making) myself bleed\b|\buntil (?:i|it|they) (?:bleed|bleeds|bled)\b",
        r"\b(?:my head|my arms?|my legs?|my skin|myself)\b[^.]{0,40}\buntil (?:it|i|they) "
        r"(?:hurt|hurts|bruise|bruises)\b",
        r"\b(?:hide|hiding|cover|covering) (?:up )?(?:my|the) (?:cuts|scars|burns|self harm)\b",
        r"\b(?:use|used|using) (?:a |the )?(?:blade|razor) on myself\b",
    ),
    "abuse": (
        rf"\b{_ABUSER}{_HABITUALLY} {_ASSAULT} (?:[a-z]+ and )?(?:me|us)\b(?! {_NOT_ASSAULT}\b)",
        rf"\b{_ABUSER}{_HABITUALLY} touch(?:es|ed|ing)? me (?:inappropriately|without|where|down there|sexually"
        r"|when i was (?:a kid|a child|little|young|younger|small|[0-9]+))\b",
        rf"\b{_ABUSER}{_HABITUALLY} (?:locks|locked|lock) me (?:in|up)\b",
        rf"\b{_ABUSER}{_HABITUALLY} (?:will not|does not|would not|never) let me leave (?:the house|the flat|the "
        r"room|him|her)\b",
        r"\b(?:domestic|sexual|physical|emotional|child|childhood) (?:abuse|violence)\b",
        r"\b(?:being|been|was|were|am|is|get|got|getting) (?:physically |sexually |emotionally )?"
        r"(?:abused|raped|molested|groomed|sexually assaulted)\b",
        rf"\b(?:being|been|was|were|am|get|got|getting) (?:hit|beaten|battered|strangled|choked|assaulted|attacked"
        rf"|punched|kicked|slapped) by (?:him|her|them|my (?:[a-z]+ )?{_RELATION})\b",
        r"\brap(?:e|ed|ing|ist)\b",
        r"\bmolest(?:ed|ing|s)?\b",
        rf"\babusive (?:relationship|marriage|home|household|{_RELATION})\b",
        r"\b(?:scared|afraid|terrified|frightened) (?:to go|of going) home\b",
        r"\b(?:scared|afraid|terrified|frightened) of my (?:husband|wife|partner|boyfriend|girlfriend|ex|dad|"
        r"father|stepdad|stepfather|mum|mother|stepmum)\b(?! (?:finding|getting|being|seeing|knowing|judging|"
        r"thinking|not|reaction|leaving)\b)",
        r"\b(?:scared|afraid|terrified|frightened) (?:that )?(?:he|she|my (?:husband|wife|partner|boyfriend"
        r"|girlfriend|ex)) (?:will|is going to|might|would|could) (?:kill|hurt|hit|beat|strangle) me\b",
        r"\bthreat(?:en|ens|ened|ening) to (?:kill|hurt|hit|beat|harm|stab|shoot|strangle|rape) me\b",
        r"\bthreat(?:en|ens|ened|ening) me with (?:a |his |her )?(?:knife|gun|weapon|bat|belt)\b",
        r"\bforc(?:ed|es|ing) (?:me to have sex|himself on me|herself on me|me into sex|me to do sexual)\b",
    ),
}
_COMPILED = {category: [re.compile(pattern) for pattern in patterns] for category, patterns in _PATTERNS.items()}


def flag_labels() -> list[tuple[str, str]]:
    """Every (category, layer) a flag is counted under (serving/app.py), so the metric starts at 0 for each."""
    classes = safety_classifier.default().classes
    return ([(category, "rules") for category in _PATTERNS]
            + [(category, layer) for category in classes if category != safety_classifier.ORDINARY
               for layer in ("classifier", "remote")]
            + [("session", "session"), ("session", "combined")])


def crisis_threshold() -> float:
    """The classifier's crisis threshold: what three uneasy turns of one session must add up to."""
    return safety_classifier.default().thresholds["crisis"]


def rules(text: str) -> str | None:
    """The first rule category (suicide, self_harm, abuse) whose patterns match, or None."""
    normalized = normalize(text)
    for category, patterns in _COMPILED.items():
        if any(pattern.search(normalized) for pattern in patterns):
            return category
    return None


def assess(text: str, *, classifier: safety_classifier.SafetyClassifier | None = None,
           layers: tuple[str, ...] = ("rules", "classifier")) -> SafetyVerdict:
    """Both layers: the rules flag what they know as a crisis; otherwise the classifier's score flags a crisis
    above its crisis threshold, and a check-in between its check-in and crisis thresholds (chosen on dev)."""
    normalized = normalize(text)
    if "rules" in layers:
        for category, patterns in _COMPILED.items():
            if any(pattern.search(normalized) for pattern in patterns):
                return SafetyVerdict(crisis=True, category=category, score=1.0, layer="rules")
    if "classifier" not in layers:
        return NO_CRISIS
    classifier = classifier or safety_classifier.default()
    result = classifier.score(normalized)
    if result.score >= classifier.thresholds["crisis"]:
        return SafetyVerdict(crisis=True, category=result.category, score=result.score, layer="classifier")
    if result.score >= classifier.thresholds["check_in"]:
        return SafetyVerdict(crisis=True, category=result.category, score=result.score, layer="classifier",
                             check_in=True)
    return SafetyVerdict(crisis=False, category=None, score=result.score)
