"""A seeded generator of simple, grammatical English sentences over a fixed vocabulary of about 1100 words.

Its output is the transcript of the synthetic ASR corpus: lowercase words, no punctuation, 4 to 14 words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["VOCABULARY", "SHAPES", "sentences"]

# ---------------------------------------------------------------------------------------------------------------
# Word lists. Nouns take a regular plural unless written "singular/plural". Words whose article is not what their
# first letter suggests ("a useful", "an hour") are deliberately absent, so a/an can be chosen by spelling.
PEOPLE = tuple("""
man/men woman/women child/children boy girl baby/babies teacher doctor farmer driver baker sailor nurse pilot
student artist singer painter writer waiter soldier neighbor friend brother sister mother father uncle aunt
cousin king queen guard captain player worker fisherman/fishermen dancer cook guest tourist
""".split())
ANIMALS = tuple("""
dog cat horse cow sheep/sheep goat pig duck goose/geese rabbit mouse/mice fox bird owl eagle frog fish/fish
bear wolf/wolves lion tiger monkey donkey deer/deer camel whale dolphin snake turtle bee spider parrot chicken
""".split())
THINGS = tuple("""
book cup bottle box bag key letter lamp basket hat coat shoe umbrella ticket map phone clock candle brush bucket
ball kite pencil blanket mirror bell jar plate spoon fork knife/knives rope ladder camera radio guitar drum
wallet ring coin envelope newspaper painting picture flag shirt scarf jacket glove
""".split())
FOODS = tuple("""
apple orange banana lemon potato/potatoes tomato/tomatoes carrot onion egg cake pie sandwich cookie peach pear
melon cherry pizza biscuit
""".split())
VEHICLES = tuple("bus car truck train boat ship bicycle plane taxi van tractor tram".split())
PLACES = tuple("""
station market river garden kitchen library museum school hospital bridge park beach forest village harbor
castle church farm field hill lake mountain office shop restaurant hotel airport bakery factory island road
street tower lighthouse cinema theater stadium valley square playground
""".split())
SURFACES = tuple("table desk shelf/shelves floor bed sofa counter bench windowsill step".split())
NAMES = tuple("""
anna peter maria james sarah david emma thomas lucy daniel olivia michael sophie robert laura george alice henry
julia samuel kate oliver grace jack nina leo clara oscar rose max ella ben hannah paul mia tom ruby adam zoe simon
""".split())
CITIES = tuple("london paris berlin madrid rome tokyo cairo lisbon vienna dublin boston chicago sydney toronto "
               "moscow athens".split())
DAYS = tuple("monday tuesday wednesday thursday friday saturday sunday".split())
MONTHS = tuple("january february march april may june july august september october november december".split())

ADJ_LIVING = tuple("""
young happy sad tired busy hungry clever brave kind angry gentle strong lazy proud friendly careful funny noisy
lucky sleepy calm quiet little old tall big small polite curious nervous cheerful
""".split())
ADJ_THING = tuple("""
big small old new heavy light long short tiny huge dirty clean wet dry broken empty full wooden shiny soft hard
round flat cheap strange famous plastic metal paper glass warm cold bright dark
""".split())
ADJ_FOOD = tuple("fresh sweet sour ripe big small warm cold delicious juicy green".split())
ADJ_PLACE = tuple("old new busy quiet empty crowded famous small big dark cold warm noisy narrow wide beautiful "
                  "little ancient".split())
COLOURS = tuple("red blue green yellow purple pink brown black white grey silver golden".split())
ADVERBS = tuple("""
quickly slowly quietly loudly carefully happily sadly gently suddenly finally
""".split())
FREQUENCY_ADVERBS = tuple("often always never sometimes usually".split())  # go before a present-tense verb
CLOSING_ADVERBS = tuple("again together early late soon".split())  # end an intransitive clause
INTENSIFIERS = tuple("very quite rather really".split())
SMALL_NUMBERS = tuple("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                      "sixteen seventeen eighteen nineteen".split())
TENS = tuple("twenty thirty forty fifty sixty seventy eighty ninety".split())

# Every verb as "base third-person past -ing"; the class tuples below say which objects each verb takes.
VERB_FORMS = tuple(v.strip() for v in re.split(r"[|\n]", """
carry carries carried carrying|find finds found finding|lose loses lost losing|open opens opened opening
drop drops dropped dropping|hold holds held holding|wash washes washed washing|clean cleans cleaned cleaning
fix fixes fixed fixing|bring brings brought bringing|take takes took taking|hide hides hid hiding
move moves moved moving|pack packs packed packing|throw throws threw throwing|catch catches caught catching
buy buys bought buying|sell sells sold selling|paint paints painted painting|borrow borrows borrowed borrowing
keep keeps kept keeping|need needs needed needing|want wants wanted wanting|like likes liked liking
push pushes pushed pushing|pull pulls pulled pulling|lift lifts lifted lifting|check checks checked checking
repair repairs repaired repairing|choose chooses chose choosing|forget forgets forgot forgetting
draw draws drew drawing|eat eats ate eating|cook cooks cooked cooking|cut cuts cut cutting
bake bakes baked baking|slice slices sliced slicing|share shares shared sharing|peel peels peeled peeling
taste tastes tasted tasting|pick picks picked picking|help helps helped helping|follow follows followed following
meet meets met meeting|call calls called calling|watch watches watched watching|see sees saw seeing
visit visits visited visiting|feed feeds fed feeding|teach teaches taught teaching|thank thanks thanked thanking
invite invites invited inviting|remember remembers remembered remembering|miss misses missed missing
chase chases chased chasing|greet greets greeted greeting|hear hears heard hearing|ask asks asked asking
wake wakes woke waking|leave leaves left leaving|reach reaches reached reaching|enter enters entered entering
explore explores explored exploring|cross crosses crossed crossing|pass passes passed passing
drive drives drove driving|park parks parked parking|stop stops stopped stopping|board boards boarded boarding
sleep sleeps slept sleeping|run runs ran running|walk walks walked walking|sing sings sang singing
laugh laughs laughed laughing|wait waits waited waiting|arrive arrives arrived arriving|dance dances danced dancing
swim swims swam swimming|shout shouts shouted shouting|smile smiles smiled smiling|work works worked working
rest rests rested resting|cry cries cried crying|jump jumps jumped jumping|sit sits sat sitting
stand stands stood standing|listen listens listened listening|play plays played playing|read reads read reading
write writes wrote writing|climb climbs climbed climbing|travel travels traveled traveling|fall falls fell falling
turn turns turned turning|fly flies flew flying|sail sails sailed sailing|ride rides rode riding
put puts put putting|place places placed placing|leave leaves left leaving|go goes went going
come comes came coming|live lives lived living|return returns returned returning
""") if v.strip())

V_THING = tuple("carry find lose open drop hold wash clean fix bring take hide move pack throw catch buy sell paint "
                "borrow keep need want like push pull lift check repair choose forget draw".split())
V_FOOD = tuple("eat cook cut bake slice share peel taste pick buy sell wash want like bring carry need".split())
V_LIVING = tuple("help follow meet call watch see visit feed teach thank invite remember miss find chase greet hear "
                 "ask wake".split())
V_ANIMAL = tuple("follow watch see feed chase find hear wake catch wash".split())
V_PLACE = tuple("visit leave reach clean paint enter explore cross pass see".split())
V_VEHICLE = tuple("drive park wash fix repair stop board miss catch paint sell buy watch see follow push".split())
V_INTRANS = tuple("sleep run walk sing laugh wait arrive dance swim shout smile work rest cry jump sit stand listen "
                  "play read write climb travel fall".split())
V_INTRANS_ANIMAL = tuple("sleep run walk wait swim jump sit rest play climb fall".split())
V_INTRANS_VEHICLE = tuple("stop arrive wait turn move".split())
V_MOTION_LIVING = tuple("walk run swim jump climb ride".split())
V_MOTION_VEHICLE = tuple("drive move sail turn".split())
V_MOTION_ANIMAL = tuple("walk run swim jump fly".split())
V_PUT = tuple("put place leave".split())

PREP_LOCATIVE = tuple("in at near behind beside inside outside by".split())
PREP_PATH = tuple("across through along past around towards over into".split())
PREP_SURFACE = tuple("on under beside behind".split())
POSSESSIVES = tuple("my your his her our their".split())
SUBJ_PRONOUNS = tuple("i you we they he she".split())
OBJ_PRONOUNS = tuple("me you him her us them".split())
MODALS = tuple("can should must might could would".split())
CONJUNCTIONS = tuple("while because when before after and but".split())
TIME_WORDS = tuple("today tonight yesterday tomorrow now".split())
TIME_NOUNS = tuple("morning evening afternoon night week weekend".split())
TIME_DET = tuple("this last next every".split())
# Literal words the sentence shapes use directly (keep in sync: the tests check every emitted word is in VOCABULARY).
FUNCTION_WORDS = tuple("""
the a an this that these those some many every there is are was were will did does do not please who which
what where why when how to on in at with for am let us o clock noon midnight
""".split())


# ---------------------------------------------------------------------------------------------------------------
def _split_noun(entry: str) -> tuple[str, str]:
    if "/" in entry:
        singular, plural = entry.split("/")
        return singular, plural
    if entry.endswith(("s", "x", "ch", "sh", "z")):
        return entry, entry + "es"
    if entry.endswith("y") and entry[-2] not in "aeiou":
        return entry, entry[:-1] + "ies"
    return entry, entry + "s"


def _nouns(entries: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple(_split_noun(e) for e in entries)


_NOUNS = {
    "person": _nouns(PEOPLE), "animal": _nouns(ANIMALS), "thing": _nouns(THINGS), "food": _nouns(FOODS),
    "vehicle": _nouns(VEHICLES), "place": _nouns(PLACES), "surface": _nouns(SURFACES),
}
_ADJ = {"person": ADJ_LIVING, "animal": ADJ_LIVING + COLOURS[:4], "thing": ADJ_THING + COLOURS,
        "food": ADJ_FOOD, "vehicle": ADJ_THING + COLOURS, "place": ADJ_PLACE, "surface": ADJ_THING + COLOURS}
_OBJ_VERBS = {"thing": V_THING, "food": V_FOOD, "person": V_LIVING, "animal": V_ANIMAL, "place": V_PLACE,
              "vehicle": V_VEHICLE}
_VERBS: dict[str, tuple[str, str, str, str]] = {}
for _line in VERB_FORMS:
    _forms = tuple(_line.split())
    assert len(_forms) == 4, _line
    _VERBS[_forms[0]] = _forms  # type: ignore[assignment]

Words = list[str]


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def number_words(n: int) -> Words:
    """Spell out 1..99 ("forty two")."""
    if not 1 <= n <= 99:
        raise ValueError(f"number_words covers 1..99, got {n}")
    if n < 20:
        return [SMALL_NUMBERS[n - 1]]
    tens, ones = divmod(n, 10)
    return [TENS[tens - 2]] + ([SMALL_NUMBERS[ones - 1]] if ones else [])


def _count(rng: np.random.Generator) -> Words:
    # Mostly small counts, as in speech; occasionally two-word numbers for variety.
    n = int(rng.integers(2, 13)) if _chance(rng, 0.8) else int(rng.integers(13, 100))
    return number_words(n)


def _adjs(rng: np.random.Generator, cls: str, p: float) -> Words:
    out: Words = []
    if _chance(rng, p):
        if _chance(rng, 0.15):
            # "very red" is odd: intensifiers only go with gradable (non-colour) adjectives.
            out += [_pick(rng, INTENSIFIERS), _pick(rng, tuple(a for a in _ADJ[cls] if a not in COLOURS))]
        else:
            out.append(_pick(rng, _ADJ[cls]))
        # A second adjective only for physical things, where "small red" reads naturally.
        if cls in ("thing", "vehicle") and _chance(rng, 0.2):
            colour = _pick(rng, COLOURS)
            if colour != out[-1]:
                out.append(colour)
    return out


def _np(rng: np.random.Generator, cls: str, plural: bool = False, adj_p: float = 0.45, definite: bool = False) -> Words:
    """A noun phrase of class `cls`: determiner, optional adjectives, noun."""
    singular, plural_form = _pick(rng, _NOUNS[cls])  # type: ignore[misc]
    noun = plural_form if plural else singular
    adjs = _adjs(rng, cls, adj_p)
    body = adjs + [noun]
    if definite:
        det: Words = ["the"]
    elif plural:
        r = rng.random()
        det = ["the"] if r < 0.35 else [_pick(rng, ("these", "those", "some", "many"))] if r < 0.55 else \
            [_pick(rng, POSSESSIVES)] if r < 0.7 else _count(rng)
    else:
        r = rng.random()
        det = ["the"] if r < 0.45 else [_article(body[0])] if r < 0.7 else \
            [_pick(rng, POSSESSIVES)] if r < 0.9 else [_pick(rng, ("this", "that", "every"))]
    return det + body


def _subject(rng: np.random.Generator) -> tuple[Words, str, bool]:
    """An animate subject: (words, class, whether the verb takes the third person singular)."""
    r = rng.random()
    if r < 0.2:
        pron = _pick(rng, SUBJ_PRONOUNS)
        return [pron], "person", pron in ("he", "she")
    if r < 0.4:
        return [_pick(rng, NAMES)], "person", True
    cls = "animal" if _chance(rng, 0.3) else "person"
    plural = _chance(rng, 0.3)
    return _np(rng, cls, plural), cls, not plural


_REFLEXIVE_CLASH = {"i": "me", "we": "us", "he": "him", "she": "her", "they": "them", "you": "you"}


def _object(rng: np.random.Generator, subject_cls: str, subject: Words = ()) -> tuple[Words, str]:
    """A random object class and its noun phrase; returns (words, verb class key)."""
    key = _pick(rng, ("thing", "thing", "food", "person", "animal", "place", "vehicle")
                if subject_cls == "person" else ("thing", "food", "person", "animal", "place"))
    if key == "person" and _chance(rng, 0.35):
        pron = _pick(rng, OBJ_PRONOUNS)
        # "we visited us" needs a reflexive, which this grammar does not have.
        if _chance(rng, 0.6) or list(subject) == [k for k, v in _REFLEXIVE_CLASH.items() if v == pron][:1]:
            return [_pick(rng, NAMES)], key
        return [pron], key
    if key == "place":
        return _np(rng, "place", definite=True), key
    return _np(rng, key, plural=_chance(rng, 0.25)), key


def _obj_verb(rng: np.random.Generator, key: str, subject_cls: str) -> str:
    verbs = _OBJ_VERBS[key]
    if subject_cls == "animal":
        # Animals only do animal things to objects.
        allowed = tuple(v for v in verbs if v in ("find", "chase", "follow", "watch", "see", "hear", "eat", "hide",
                                                  "catch", "carry", "drop", "taste", "wake", "cross", "enter",
                                                  "explore", "leave", "reach"))
        verbs = allowed or ("see",)
    return _pick(rng, verbs)


def _place_pp(rng: np.random.Generator, path: bool = False) -> Words:
    prep = _pick(rng, PREP_PATH if path else PREP_LOCATIVE)
    return [prep] + _np(rng, "place", adj_p=0.3, definite=True)


def _time(rng: np.random.Generator, tense: str) -> Words:
    r = rng.random()
    if r < 0.3:
        # Keep deictic time words compatible with the tense.
        return [{"past": "yesterday", "future": "tomorrow"}.get(tense, _pick(rng, ("today", "now", "tonight")))]
    if r < 0.55:
        return ["on", _pick(rng, DAYS)]
    if r < 0.7:
        return ["in", _pick(rng, MONTHS)]
    if r < 0.85:
        det = {"past": "last", "future": "next"}.get(tense, _pick(rng, ("this", "every")))
        return [det, _pick(rng, TIME_NOUNS)]
    return ["at", _pick(rng, ("noon", "midnight"))] if _chance(rng, 0.4) else \
        ["at"] + number_words(int(rng.integers(1, 13))) + (["o", "clock"] if _chance(rng, 0.5) else [])


def _verb(base: str, form: str) -> str:
    return _VERBS[base][("base", "third", "past", "ing").index(form)]


def _be(third: bool, subject: Words, past: bool) -> str:
    if subject == ["i"]:
        return "was" if past else "am"
    if past:
        return "was" if third else "were"
    return "is" if third else "are"


def _finite(rng: np.random.Generator, base: str, third: bool, subject: Words) -> tuple[Words, str]:
    """A finite verb group in a random tense/aspect: (words, tense) with tense past, present or future."""
    r = rng.random()
    if r < 0.35:
        return [_verb(base, "past")], "past"
    if r < 0.6:
        return [_verb(base, "third" if third else "base")], "present"
    if r < 0.8:
        past = _chance(rng, 0.3)
        return [_be(third, subject, past), _verb(base, "ing")], "past" if past else "present"
    if r < 0.9:
        return ["will", base], "future"
    return [_pick(rng, MODALS), base], "present"


# ---------------------------------------------------------------------------------------------------------------
# Sentence shapes. Each returns a list of words; length limits are enforced by the caller.
def _statement_transitive(rng: np.random.Generator) -> Words:
    subj, cls, third = _subject(rng)
    obj, key = _object(rng, cls, subj)
    verb = _obj_verb(rng, key, cls)
    vp, tense = _finite(rng, verb, third, subj)
    if tense == "present" and len(vp) == 1 and _chance(rng, 0.3):
        vp = [_pick(rng, FREQUENCY_ADVERBS)] + vp
    words = subj + vp + obj
    if key != "place" and _chance(rng, 0.45):
        words += _place_pp(rng)
    if _chance(rng, 0.2):
        words.append(_pick(rng, ADVERBS))
    if _chance(rng, 0.25):
        words += _time(rng, tense)
    return words


def _statement_intransitive(rng: np.random.Generator) -> Words:
    if _chance(rng, 0.2):
        # "the old bus stopped near the station"
        plural = _chance(rng, 0.3)
        subj, cls, third = _np(rng, "vehicle", plural), "vehicle", not plural
        verb = _pick(rng, V_INTRANS_VEHICLE + V_MOTION_VEHICLE)
    else:
        subj, cls, third = _subject(rng)
        verb = _pick(rng, V_INTRANS_ANIMAL + V_MOTION_ANIMAL if cls == "animal" else V_INTRANS + V_MOTION_LIVING)
    vp, tense = _finite(rng, verb, third, subj)
    words = subj + vp
    if _chance(rng, 0.5):
        words.append(_pick(rng, ADVERBS if _chance(rng, 0.7) else CLOSING_ADVERBS))
    words += _place_pp(rng, path=verb in V_MOTION_LIVING + V_MOTION_ANIMAL + V_MOTION_VEHICLE and _chance(rng, 0.6))
    if _chance(rng, 0.35):
        words += _time(rng, tense)
    return words


def _counted_motion(rng: np.random.Generator) -> Words:
    # "seven red boats sail past the old lighthouse"
    cls = _pick(rng, ("vehicle", "animal", "person"))
    singular, plural = _pick(rng, _NOUNS[cls])  # type: ignore[misc]
    if cls == "vehicle":
        verb = "sail" if singular in ("boat", "ship") else _pick(rng, V_MOTION_VEHICLE[:2] + V_INTRANS_VEHICLE)
    elif cls == "animal":
        verb = "fly" if singular in ("bird", "owl", "eagle", "parrot", "bee", "duck", "goose") else \
            _pick(rng, V_MOTION_ANIMAL[:4])
    else:
        verb = _pick(rng, V_MOTION_LIVING)
    words = _count(rng) + _adjs(rng, cls, 0.6) + [plural]
    words.append(_verb(verb, "past") if _chance(rng, 0.5) else verb)
    words += _place_pp(rng, path=verb not in V_INTRANS_VEHICLE)
    if _chance(rng, 0.3):
        words += _time(rng, "present")
    return words


def _existential(rng: np.random.Generator) -> Words:
    cls = _pick(rng, ("thing", "food", "animal", "person", "vehicle", "surface", "place"))
    past = _chance(rng, 0.35)
    if _chance(rng, 0.6):
        words = ["there", "were" if past else "are"] + _count(rng) + _adjs(rng, cls, 0.5) + [_pick(rng, _NOUNS[cls])[1]]
    else:
        body = _adjs(rng, cls, 0.6) + [_pick(rng, _NOUNS[cls])[0]]
        words = ["there", "was" if past else "is", _article(body[0])] + body
    if cls in ("thing", "food") and _chance(rng, 0.5):
        words += [_pick(rng, PREP_SURFACE)] + _np(rng, "surface", adj_p=0.2, definite=True)
    else:
        words += _place_pp(rng)
    return words


def _yes_no_question(rng: np.random.Generator) -> Words:
    subj, cls, third = _subject(rng)
    if _chance(rng, 0.3):
        verb = _pick(rng, V_INTRANS_ANIMAL if cls == "animal" else V_INTRANS)
        return [_be(third, subj, _chance(rng, 0.3)), *subj, _verb(verb, "ing")] + _place_pp(rng)
    obj, key = _object(rng, cls, subj)
    verb = _obj_verb(rng, key, cls)
    aux = _pick(rng, ("did", "will", "can", "should")) if _chance(rng, 0.6) else ("does" if third else "do")
    words = [aux] + subj + [verb] + obj
    if key != "place" and _chance(rng, 0.4):
        words += _place_pp(rng)
    return words


def _wh_question(rng: np.random.Generator) -> Words:
    r = rng.random()
    subj, cls, third = _subject(rng)
    if r < 0.3:
        # "where did anna leave her blue umbrella"
        obj, key = _object(rng, cls, subj)
        verb = _obj_verb(rng, key, cls)
        aux = _pick(rng, ("did", "will", "can")) if _chance(rng, 0.6) else ("does" if third else "do")
        return [_pick(rng, ("where", "why", "when", "how")), aux] + subj + [verb] + obj
    if r < 0.5:
        # "what did the farmer find in the garden"
        key = _pick(rng, ("thing", "food"))
        verb = _obj_verb(rng, key, cls)
        return ["what", _pick(rng, ("did", "will", "can"))] + subj + [verb] + _place_pp(rng)
    if r < 0.7:
        # "why is the small dog sleeping near the river"
        verb = _pick(rng, V_INTRANS_ANIMAL if cls == "animal" else V_INTRANS)
        be = _be(third, subj, _chance(rng, 0.3))
        words = [_pick(rng, ("why", "where", "when")), be] + subj + [_verb(verb, "ing")]
        if words[0] != "where" and _chance(rng, 0.6):
            words += _place_pp(rng)
        return words
    if r < 0.85:
        # "how many red apples are on the table"
        cls2 = _pick(rng, ("thing", "food"))
        return ["how", "many"] + _adjs(rng, cls2, 0.4) + [_pick(rng, _NOUNS[cls2])[1]] + \
            [_pick(rng, ("are", "were"))] + [_pick(rng, PREP_SURFACE)] + _np(rng, "surface", adj_p=0.3, definite=True)
    # "who painted the old fence near the station"
    obj, key = _object(rng, "person")
    return ["who", _verb(_obj_verb(rng, key, "person"), "past")] + obj + (_place_pp(rng) if key != "place" else [])


def _command(rng: np.random.Generator) -> Words:
    words: Words = ["please"] if _chance(rng, 0.4) else []
    r = rng.random()
    if r < 0.4:
        # "please put the red cup on the table"
        key = _pick(rng, ("thing", "food"))
        words += [_pick(rng, V_PUT)] + _np(rng, key, plural=_chance(rng, 0.25)) + [_pick(rng, PREP_SURFACE)] + \
            _np(rng, "surface", adj_p=0.3, definite=True)
    elif r < 0.55:
        words += ["do", "not", _pick(rng, V_THING)] + _np(rng, "thing")
    else:
        obj, key = _object(rng, "person")
        words += [_obj_verb(rng, key, "person")] + obj
        if key != "place" and _chance(rng, 0.4):
            words += _place_pp(rng)
    if _chance(rng, 0.3):
        words.append(_pick(rng, ADVERBS))
    return words


def _relative_clause(rng: np.random.Generator) -> Words:
    if _chance(rng, 0.5):
        # "the man who sold the bread lives near the station"
        cls = "person" if _chance(rng, 0.7) else "animal"
        plural = _chance(rng, 0.3)
        head = _np(rng, cls, plural, adj_p=0.3, definite=True)
        obj, key = _object(rng, cls)
        rel = ["who" if cls == "person" else "that", _verb(_obj_verb(rng, key, cls), "past")] + obj
        verb = _pick(rng, ("live",) + (V_INTRANS_ANIMAL if cls == "animal" else V_INTRANS))
        main, _ = _finite(rng, verb, not plural, head)
        return head + rel + main + _place_pp(rng)
    # "the cake that my mother baked was very sweet"
    key = _pick(rng, ("thing", "food"))
    plural = _chance(rng, 0.3)
    head = _np(rng, key, plural, adj_p=0.2, definite=True)
    subj, cls, _ = _subject(rng)
    rel = [_pick(rng, ("that", "which"))] + subj + [_verb(_obj_verb(rng, key, "person"), "past")]
    be = "were" if plural else "was"
    if _chance(rng, 0.5):
        return head + rel + [be] + ([_pick(rng, INTENSIFIERS)] if _chance(rng, 0.5) else []) + [_pick(rng, _ADJ[key])]
    return head + rel + [be, _pick(rng, PREP_SURFACE)] + _np(rng, "surface", adj_p=0.2, definite=True)


def _compound(rng: np.random.Generator) -> Words:
    # "the cat slept while the children played in the garden"
    def clause(with_pp: bool) -> Words:
        subj, cls, third = _subject(rng)
        verb = _pick(rng, V_INTRANS_ANIMAL if cls == "animal" else V_INTRANS)
        words = subj + [_verb(verb, "past")]
        return words + _place_pp(rng) if with_pp else words
    first_pp = _chance(rng, 0.4)
    return clause(first_pp) + [_pick(rng, CONJUNCTIONS)] + clause(not first_pp or _chance(rng, 0.3))


def _negation(rng: np.random.Generator) -> Words:
    subj, cls, third = _subject(rng)
    obj, key = _object(rng, cls, subj)
    verb = _obj_verb(rng, key, cls)
    aux = _pick(rng, ("did", "will", "can", "should")) if _chance(rng, 0.7) else ("does" if third else "do")
    words = subj + [aux, "not", verb] + obj
    if _chance(rng, 0.35):
        words += _time(rng, {"did": "past", "will": "future"}.get(aux, "present"))
    return words


def _travel(rng: np.random.Generator) -> Words:
    # "anna will travel to paris on friday"
    subj, _, third = _subject(rng)
    verb = _pick(rng, ("travel", "fly", "go", "come", "drive", "walk", "return", "sail", "ride"))
    vp, tense = _finite(rng, verb, third, subj)
    words = subj + vp + ["to", _pick(rng, CITIES)]
    if _chance(rng, 0.3):
        words += ["with"] + ([_pick(rng, NAMES)] if _chance(rng, 0.5) else _np(rng, "person", adj_p=0.2))
    if _chance(rng, 0.6):
        words += _time(rng, tense)
    return words


def _description(rng: np.random.Generator) -> Words:
    # "the old bridge near the river is very narrow"
    cls = _pick(rng, ("thing", "place", "vehicle", "food", "animal"))
    plural = _chance(rng, 0.3)
    if cls == "place":
        head = _np(rng, "place", plural, adj_p=0.2, definite=True)
    else:
        head = _np(rng, cls, plural, adj_p=0.25, definite=True)
        if _chance(rng, 0.5):
            head += _place_pp(rng) if cls != "food" else [_pick(rng, PREP_SURFACE)] + _np(rng, "surface", definite=True)
    past = _chance(rng, 0.4)
    be = ("were" if past else "are") if plural else ("was" if past else "is")
    pool = _ADJ[cls] if cls != "animal" else ADJ_LIVING
    tail = ([_pick(rng, INTENSIFIERS)] if _chance(rng, 0.5) else []) + [_pick(rng, pool)]
    if _chance(rng, 0.25):
        other = _pick(rng, pool)
        if other != tail[-1]:
            tail += ["and", other]
    return head + [be] + tail


def _want(rng: np.random.Generator) -> Words:
    # "the children want three green apples"
    subj, _, third = _subject(rng)
    verb = _pick(rng, ("want", "need", "like", "buy", "bring", "sell", "carry", "find"))
    key = _pick(rng, ("food", "thing"))
    form = _verb(verb, "past") if _chance(rng, 0.5) else _verb(verb, "third" if third else "base")
    words = subj + [form] + _count(rng) + _adjs(rng, key, 0.6) + [_pick(rng, _NOUNS[key])[1]]
    if _chance(rng, 0.3):
        words += ["for"] + _np(rng, "person", adj_p=0.2) if _chance(rng, 0.5) else ["for", _pick(rng, NAMES)]
    return words


def _placement(rng: np.random.Generator) -> Words:
    # "my brother is putting the empty bottles under the bench"
    subj, _, third = _subject(rng)
    vp, _ = _finite(rng, _pick(rng, V_PUT), third, subj)
    key = _pick(rng, ("thing", "food"))
    return subj + vp + _np(rng, key, plural=_chance(rng, 0.3)) + [_pick(rng, PREP_SURFACE)] + \
        _np(rng, "surface", adj_p=0.3, definite=True)


def _lets(rng: np.random.Generator) -> Words:
    # "let us visit the museum on sunday"
    key = _pick(rng, ("place", "person", "thing", "food"))
    verb = _pick(rng, _OBJ_VERBS[key])
    obj = _np(rng, key, definite=key == "place", plural=key != "place" and _chance(rng, 0.3))
    words = ["let", "us", verb] + obj
    if _chance(rng, 0.4):
        words += _time(rng, "future")
    return words


SHAPES: dict[str, Callable[[np.random.Generator], Words]] = {
    "statement_transitive": _statement_transitive,
    "statement_intransitive": _statement_intransitive,
    "counted_motion": _counted_motion,
    "existential": _existential,
    "yes_no_question": _yes_no_question,
    "wh_question": _wh_question,
    "command": _command,
    "relative_clause": _relative_clause,
    "compound": _compound,
    "negation": _negation,
    "travel": _travel,
    "description": _description,
    "want": _want,
    "placement": _placement,
    "lets": _lets,
}
_SHAPE_FNS = tuple(SHAPES.values())
# Declaratives dominate real speech; questions and commands still get a fair share.
_SHAPE_WEIGHTS = np.array([3, 2, 1.5, 1, 1.2, 1.2, 1.2, 1.2, 1, 1, 0.7, 1, 0.7, 0.6, 0.4])
_SHAPE_WEIGHTS = _SHAPE_WEIGHTS / _SHAPE_WEIGHTS.sum()


def sentences(n: int, rng: np.random.Generator, max_words: int = 14, min_words: int = 4) -> list[str]:
    """Return `n` distinct sentences with `min_words`..`max_words` words each, in generation order.

    The output for a given generator state is deterministic, and `sentences(k, rng)` is a prefix of
    `sentences(n, rng)` for k < n when started from the same state (the corpus builder relies on that).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    out: list[str] = []
    seen: set[str] = set()
    attempts, budget = 0, 200 * n + 1000
    while len(out) < n:
        attempts += 1
        if attempts > budget:
            raise RuntimeError(f"could only make {len(out)} distinct sentences of {min_words}-{max_words} words, "
                               f"asked for {n}; allow longer sentences")
        shape = _SHAPE_FNS[int(rng.choice(len(_SHAPE_FNS), p=_SHAPE_WEIGHTS))]
        words = shape(rng)
        if not min_words <= len(words) <= max_words:
            continue
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _vocabulary() -> tuple[str, ...]:
    words: set[str] = set()
    for nouns in _NOUNS.values():
        for singular, plural in nouns:
            words.update((singular, plural))
    for forms in _VERBS.values():
        words.update(forms)
    for group in (NAMES, CITIES, DAYS, MONTHS, ADJ_LIVING, ADJ_THING, ADJ_FOOD, ADJ_PLACE, COLOURS, ADVERBS,
                  FREQUENCY_ADVERBS, CLOSING_ADVERBS,
                  INTENSIFIERS, SMALL_NUMBERS, TENS, PREP_LOCATIVE, PREP_PATH, PREP_SURFACE, POSSESSIVES,
                  SUBJ_PRONOUNS, OBJ_PRONOUNS, MODALS, CONJUNCTIONS, TIME_WORDS, TIME_NOUNS, TIME_DET,
                  FUNCTION_WORDS):
        words.update(group)
    return tuple(sorted(words))


VOCABULARY: tuple[str, ...] = _vocabulary()
