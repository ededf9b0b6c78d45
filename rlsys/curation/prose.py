"""Offline English-like prose for the embedded corpus: seeded sentence templates over a fixed vocabulary.

Each document draws its own place names, people and a subset of the vocabulary, so two documents share
few word 5-grams (unrelated documents sit near Jaccard 0), while sentences keep the stop words,
punctuation and word lengths of ordinary prose that the Gopher, C4 and FineWeb rules expect.
"""
from __future__ import annotations

import random

NOUNS = """river village market council garden engine bridge library harvest festival museum railway harbour
forest mountain valley school teacher farmer merchant painter scientist committee report survey method season
century tradition language recipe kitchen orchard vineyard factory workshop machine instrument melody choir
theatre novel poem chapter letter journal newspaper island coast lighthouse storm winter summer rainfall drought
glacier desert canyon meadow wheat barley cattle wool cotton silk pottery glass copper iron timber stone marble
cathedral chapel castle tower fortress wall gate road canal tunnel station airport ship vessel sailor captain
soldier bishop mayor senator parliament election treaty border province district county census economy trade
budget bank coin currency price wage worker union strike reform court judge trial witness theory experiment
laboratory telescope planet comet orbit satellite signal network database algorithm protocol device battery
sensor camera lens film studio album concert orchestra dancer athlete stadium tournament league coach player
species insect bird beetle fungus fossil mineral volcano earthquake tide estuary lagoon reef pasture mill
bakery brewery tannery quarry mine furnace kiln loom spindle cart wagon carriage saddle anchor sail compass
map atlas archive manuscript scroll tablet inscription monument statue fountain square avenue suburb
neighbourhood clinic hospital nurse physician vaccine remedy herb spice pepper ginger saffron honey cheese
bread soup festival parade ceremony ritual dialect grammar alphabet scholar student lecture seminar thesis
debate pamphlet charter guild apprentice craftsman blacksmith carpenter weaver potter fisherman shepherd
hunter ranger warden keeper gardener engineer architect surveyor inspector clerk treasurer""".split()

ADJECTIVES = """ancient modern small large quiet busy northern southern eastern western coastal rural urban
famous local regional national early late careful detailed rare common narrow wide steep shallow deep bright
dark warm cold dry humid fertile rocky sandy wooden stone brick painted restored ruined important modest
remarkable typical unusual gradual sudden steady public private formal informal annual seasonal permanent
temporary original complex simple elegant sturdy fragile heavy light precise rough smooth colourful plain
generous strict patient skilled experienced young elderly independent central remote hidden open""".split()

# (base, past, past participle): irregular forms spelled out
VERBS = [tuple(v.split("/")) for v in """build/built/built open/opened/opened describe/described/described
record/recorded/recorded study/studied/studied measure/measured/measured restore/restored/restored
design/designed/designed publish/published/published expand/expanded/expanded replace/replaced/replaced
visit/visited/visited cross/crossed/crossed support/supported/supported fund/funded/funded
organise/organised/organised improve/improved/improved reduce/reduced/reduced increase/increased/increased
produce/produced/produced collect/collected/collected examine/examined/examined report/reported/reported
announce/announced/announced complete/completed/completed repair/repaired/repaired found/founded/founded
move/moved/moved close/closed/closed paint/painted/painted write/wrote/written compose/composed/composed
perform/performed/performed sign/signed/signed discover/discovered/discovered observe/observed/observed
explain/explained/explained test/tested/tested trade/traded/traded export/exported/exported
harvest/harvested/harvested plant/planted/planted map/mapped/mapped name/named/named elect/elected/elected
appoint/appointed/appointed train/trained/trained teach/taught/taught sell/sold/sold buy/bought/bought
carry/carried/carried protect/protected/protected inspect/inspected/inspected celebrate/celebrated/celebrated
translate/translated/translated catalogue/catalogued/catalogued survey/surveyed/surveyed
rebuild/rebuilt/rebuilt cultivate/cultivated/cultivated preserve/preserved/preserved
document/documented/documented""".split()]

PRESENT = """remains includes provides attracts connects contains requires supports covers serves shows
reflects follows shapes describes explains offers marks holds links frames""".split()

ADVERBS = """slowly quickly carefully gradually eventually recently largely mostly rarely often still widely
closely briefly steadily quietly""".split()

CONNECTIVES = ["However", "Meanwhile", "In addition", "As a result", "For this reason", "At the same time",
               "In later years", "By contrast", "Over time", "Even so"]

TIMES = ["in the spring", "during the winter", "after the war", "before the harvest", "in the following decade",
         "by the end of the century", "within a few years", "at the turn of the century", "over the next season"]

FIRST_NAMES = """Anna Marta Jonas Elena Pieter Sofia Tomas Irene Lukas Clara Henrik Nadia Oskar Vera Milan
Greta Emil Ingrid Pavel Lena Viktor Rosa Anton Hanna Felix Iris Bruno Alma Karl Edith""".split()
LAST_NAMES = """Varga Lindqvist Moreau Novak Brennan Castell Albers Dumont Halloran Ivanova Kestrel Lorne
Marchetti Okafor Petrov Quist Rasmussen Sandoval Thorne Ulrich Valdez Whitlock Yilmaz Zeller Abbott Bauer
Carvalho Dalton Engel Fischer""".split()

SYLLABLES = """ka lo ver an tis mor el dra sen fal ri os tem bur ca lin de ga nor vel sta hal mi ren
por tu zel ar bri con""".split()

SENTENCES = [
    "In {year}, the {adj} {noun} of {place} was {pp} by {person}.",
    "{person} {past} the {noun} near {place} and later {past2} a {adj} {noun2}.",
    "The {noun} {present} a {adj} {noun2} that {present2} the {noun3} of the {noun4}.",
    "According to a {noun} published in {year}, about {count} {nouns} lived in the {noun2} of {place}.",
    "Many {nouns} have {pp} the {adj} {noun} since the {ordinal} century.",
    "Although the {noun} was {adj}, the {nouns} of {place} continued to {base} it for {count} years.",
    "{connective}, the {noun} was {adverb} {pp} {time}.",
    "The {adj} {noun} is often {pp} with the {noun2} that {person} {past} {time}.",
    "Local {nouns} still {base} the {noun} with {adj} {noun2} and {adj2} {noun3}.",
    "It was {person} who first {past} the {adj} {noun} of {place} in {year}.",
    "The {noun} of {place} has been {pp} and {pp2} several times, most recently in {year}.",
    "{connective}, {count} {nouns} were {pp} along the {adj} {noun} {time}.",
    "Visitors to {place} can see the {noun}, the {adj} {noun2} and a {noun3} from the {ordinal} century.",
    "The {nouns} {adverb} {past} the {noun} because it was too {adj} to {base} by hand.",
    "A {adj} {noun} connects the {noun2} with the {noun3}, which {present} the {adj2} {noun4}.",
    "In the {ordinal} century the {noun} {past} {time}, and the {nouns} {past2} with it.",
    "{person} wrote that the {noun} of {place} was the most {adj} {noun2} in the {noun3}.",
    "Today the {noun} {present} {count} {nouns} and a small {noun2} that is open to the public.",
    "The {nouns} of {place} were known for their {adj} {noun} and their {adj2} {noun2}.",
    "When the {noun} {past} in {year}, the {noun2} was {pp} by a {adj} {noun3}.",
]

WORDS = NOUNS + ADJECTIVES + [v[1] for v in VERBS]
ORDINALS = ["twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth", "eighteenth",
            "nineteenth", "twentieth"]


def plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


class Prose:
    """Seeded prose: `document()` gives paragraphs of sentences about one invented place."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def place(self) -> str:
        return "".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.randint(2, 3))).capitalize()

    def person(self) -> str:
        return f"{self.rng.choice(FIRST_NAMES)} {self.rng.choice(LAST_NAMES)}"

    def sentence(self, topic: dict) -> str:
        rng = self.rng
        nouns = rng.sample(topic["nouns"], 4)
        adjs = rng.sample(topic["adjectives"], 2)
        verbs = rng.sample(VERBS, 2)
        presents = rng.sample(PRESENT, 2)
        if not topic["templates"]:  # each template once before any repeats: fewer repeated n-grams
            topic["templates"] = rng.sample(SENTENCES, len(SENTENCES))
        text = topic["templates"].pop().format(
            noun=nouns[0], noun2=nouns[1], noun3=nouns[2], noun4=nouns[3], nouns=plural(nouns[0]),
            adj=adjs[0], adj2=adjs[1], base=verbs[0][0], past=verbs[0][1], past2=verbs[1][1],
            pp=verbs[0][2], pp2=verbs[1][2], present=presents[0], present2=presents[1],
            adverb=rng.choice(ADVERBS), connective=rng.choice(CONNECTIVES), time=rng.choice(TIMES),
            year=rng.randint(1450, 2020), count=rng.randint(3, 900), ordinal=rng.choice(ORDINALS),
            place=rng.choice(topic["places"]), person=rng.choice(topic["people"]))
        return text[0].upper() + text[1:]

    def topic(self) -> dict:
        rng = self.rng
        return {"nouns": rng.sample(NOUNS, 40), "adjectives": rng.sample(ADJECTIVES, 25),
                "places": [self.place() for _ in range(3)], "people": [self.person() for _ in range(3)],
                "templates": []}

    def paragraph(self, topic: dict, sentences: int) -> str:
        return " ".join(self.sentence(topic) for _ in range(sentences))

    def document(self, paragraphs: tuple[int, int] = (2, 5), sentences: tuple[int, int] = (3, 6)) -> str:
        topic = self.topic()
        return "\n\n".join(self.paragraph(topic, self.rng.randint(*sentences))
                           for _ in range(self.rng.randint(*paragraphs)))

    def word(self) -> str:
        return self.rng.choice(WORDS)
