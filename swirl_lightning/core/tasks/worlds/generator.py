"""Generated worlds: a seeded generator of small fictional worlds, one article per entity, and multi-hop questions.

A world holds people, organisations and places with invented names, linked by functional relations (each entity has
at most one value of each): a person is born in a place, works for an organisation, may be married to a person and
have a mother among them, and has a hobby; an organisation has a founder, a city and a founding year; a place has a
country and a mayor. Every entity gets one short article, written from a few templates per fact, with optional
*distractor* sentences that name other entities through relations no question asks about (a friend, a visit).

A question of ``h`` hops follows ``h`` relations from a start entity ("Where was the founder of the company that
employs Ilvo Marek born?"): its answer is unique because every relation is functional and the entities of its path
are distinct, and it is answerable by reading the ``h`` articles of its gold path in order, one search each.
The names are invented, so no pretrained model knows them: only the tool can answer.

Splits come from disjoint seed ranges (:data:`SEED_RANGES`): world ``k`` of a split has seed ``start + k``, so the
same split and index always give the same world, and no validation or test world can be a training world.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

GENERATOR_VERSION = "worlds-v1"
"""Bumped whenever the same seed and settings would give other text."""

SEED_RANGES: dict[str, tuple[int, int]] = {
    "train": (0, 1_000_000),
    "validation": (1_000_000, 2_000_000),
    "test": (2_000_000, 3_000_000),
}
"""World seeds of each split, ``[start, stop)``: disjoint, so held-out worlds are never training worlds."""

RELATIONS: dict[str, tuple[str, str]] = {
    # relation: (the kind it applies to, the kind of its value; "value" for an attribute that ends a question)
    "born_in": ("person", "place"),
    "employer": ("person", "organisation"),
    "spouse": ("person", "person"),
    "mother": ("person", "person"),
    "hobby": ("person", "value"),
    "founder": ("organisation", "person"),
    "city": ("organisation", "place"),
    "founded": ("organisation", "value"),
    "country": ("place", "value"),
    "mayor": ("place", "person"),
}
"""The relations questions follow."""

# How a relation reads inside a longer question ("the founder of {x}"), as the question itself, and as the fact the
# gold trajectory states after reading it.
_PHRASE = {"born_in": "the birthplace of {x}", "employer": "the company that employs {x}", "spouse": "the spouse of {x}",
           "mother": "the mother of {x}", "founder": "the founder of {x}", "city": "the city where {x} is based",
           "mayor": "the mayor of {x}"}
_QUESTION = {"born_in": "Where was {x} born?", "employer": "Which company employs {x}?", "spouse": "Who is {x} married to?",
             "mother": "Who is the mother of {x}?", "hobby": "What is the hobby of {x}?", "founder": "Who founded {x}?",
             "city": "In which city is {x} based?", "founded": "In which year was {x} founded?",
             "country": "In which country is {x}?", "mayor": "Who is the mayor of {x}?"}
_FACT = {"born_in": "{x} was born in {y}.", "employer": "{x} works for {y}.", "spouse": "{x} is married to {y}.",
         "mother": "The mother of {x} is {y}.", "hobby": "The hobby of {x} is {y}.", "founder": "{x} was founded by {y}.",
         "city": "{x} is based in {y}.", "founded": "{x} was founded in {y}.", "country": "{x} is in {y}.",
         "mayor": "The mayor of {x} is {y}."}
# Article sentences: a few wordings per fact, so that reading beats copying a position.
_SENTENCES = {
    "born_in": ["{x} was born in {y}.", "{s} was born in the city of {y}.", "{s} was born in {y}."],
    "employer": ["{s} works for {y}.", "{s} is employed by {y}.", "{x} works at {y}."],
    "spouse": ["{s} is married to {y}.", "{x} is married to {y}."],
    "mother": ["{p} mother is {y}.", "The mother of {x} is {y}."],
    "hobby": ["{p} hobby is {y}.", "In {p_low} free time, {s_low} enjoys {y}."],
    "founder": ["It was founded by {y}.", "{x} was founded by {y}."],
    "city": ["It is based in {y}.", "{x} is based in the city of {y}."],
    "founded": ["It was founded in {y}.", "{x} was founded in the year {y}."],
    "country": ["It is a city in {y}.", "{x} lies in {y}."],
    "mayor": ["Its mayor is {y}.", "The mayor of {x} is {y}."],
}
_DISTRACTORS = {
    "person": ["{s} is a friend of {person}.", "{s} once visited {place}.", "{s} admires {organisation}.",
               "{s} went to school with {person}."],
    "organisation": ["{x} competes with {organisation}.", "It has a supplier in {place}.", "{person} once worked there."],
    "place": ["{x} is twinned with {place}.", "{person} visited it last year.", "{organisation} has a shop there."],
}
_INTRO = {"person": "{x} is a {occupation}.", "organisation": "{x} is a {sector} company.", "place": "{x} is a city."}

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "st",
           "tr", "sh", "th", "ch"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "k", "m", "th", "nd", "rt"]
_ORG_SUFFIXES = ["Works", "Group", "Labs", "Foundry", "Mills", "Trading", "Partners", "Studios"]
_PLACE_SUFFIXES = ["", "", "ford", "ton", "heim", "burg", "wick", "mouth"]
_HOBBIES = ["chess", "pottery", "sailing", "painting", "archery", "gardening", "fencing", "rowing", "knitting",
            "birdwatching", "climbing", "cycling", "juggling", "origami", "fishing", "baking"]
_OCCUPATIONS = ["baker", "carpenter", "teacher", "nurse", "pilot", "painter", "farmer", "lawyer", "engineer", "tailor",
                "chemist", "librarian", "architect", "musician", "surveyor", "glassblower"]
_SECTORS = ["shipping", "textile", "software", "mining", "furniture", "printing", "brewing", "toy", "glass", "tea"]


@dataclass(frozen=True)
class WorldSettings:
    """The knobs of one world. Recorded beside every folder the generator writes."""

    people: int = 16
    organisations: int = 5
    places: int = 5
    countries: int = 3
    questions: int = 20
    """Questions per world (fewer when the world has fewer distinct paths)."""
    hops: tuple[int, ...] = (1, 2, 3)
    """Hop counts, drawn evenly per question."""
    distractors: int = 1
    """Distractor sentences per article, naming other entities through relations no question asks about."""
    similar_names: float = 0.3
    """Chance that a new person takes an existing person's family name (so names differ in one word only)."""

    def __post_init__(self) -> None:
        if min(self.people, self.organisations, self.places, self.countries) < 2:
            raise ValueError("a world needs at least 2 people, organisations, places and countries")
        if self.people < 4:
            raise ValueError(f"people: expected at least 4 (spouses and mothers), got {self.people}")
        if self.questions < 1:
            raise ValueError(f"questions: expected at least 1 per world, got {self.questions}")
        if not self.hops or any(not 1 <= h <= 6 for h in self.hops):
            raise ValueError(f"hops: expected hop counts between 1 and 6, got {list(self.hops)}")
        if self.distractors < 0:
            raise ValueError(f"distractors: expected 0 or more, got {self.distractors}")
        if not 0 <= self.similar_names <= 1:
            raise ValueError(f"similar_names: expected a chance in [0, 1], got {self.similar_names}")


@dataclass
class Entity:
    """A person, an organisation or a place, with its facts (relation -> entity id or attribute value)."""

    id: str
    kind: str
    name: str
    facts: dict[str, str] = field(default_factory=dict)
    extras: dict[str, str] = field(default_factory=dict)
    """Facts no question asks about: occupation, sector, pronoun."""


@dataclass(frozen=True)
class Question:
    """One question of a world: its answer and the gold path that reaches it."""

    id: str
    question: str
    answer: str
    world: str
    hops: int
    relations: tuple[str, ...]
    path: tuple[str, ...]
    """Titles of the articles to read, in order (one search each)."""
    path_ids: tuple[str, ...]
    facts: tuple[str, ...]
    """The fact each article of the path gives (``Ilvo Marek works for Vornel Works.``), in order."""

    def record(self) -> dict:
        """The JSON line of ``questions.jsonl``."""
        return {"id": self.id, "question": self.question, "answer": self.answer, "world": self.world,
                "hops": self.hops, "relations": list(self.relations), "path": list(self.path),
                "path_ids": list(self.path_ids), "facts": list(self.facts)}


@dataclass
class World:
    """One generated world: its entities (by id), one article per entity, and its questions."""

    id: str
    seed: int
    settings: WorldSettings
    entities: dict[str, Entity]
    articles: dict[str, str]
    """Entity id -> article text."""
    questions: list[Question]

    def documents(self) -> list[dict]:
        """The JSON lines of ``corpus.jsonl``: ``{id, title, text, world}`` per entity."""
        return [{"id": entity_id, "title": self.entities[entity_id].name, "text": text, "world": self.id}
                for entity_id, text in self.articles.items()]


def split_of_seed(seed: int) -> str | None:
    """The split whose seed range holds ``seed`` (``None`` outside every range)."""
    return next((split for split, (start, stop) in SEED_RANGES.items() if start <= seed < stop), None)


def world_seeds(split: str, count: int, first: int = 0) -> range:
    """The seeds of worlds ``first`` to ``first + count`` of ``split``."""
    if split not in SEED_RANGES:
        raise ValueError(f"split: expected one of {', '.join(SEED_RANGES)}, got {split!r}")
    start, stop = SEED_RANGES[split]
    if first < 0 or count < 1 or start + first + count > stop:
        raise ValueError(f"worlds {first}..{first + count} do not fit the {split} seed range ({stop - start} worlds)")
    return range(start + first, start + first + count)


def world_id(seed: int) -> str:
    return f"w{seed}"


class _Names:
    """Invented names, unique within one world."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int, ending: Sequence[str] = _CODAS) -> str:
        text = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables))
        return (text + self.rng.choice(ending)).capitalize()

    def unique(self, make) -> str:
        for _ in range(1000):
            name = make()
            if name not in self.used and name.lower() not in (u.lower() for u in self.used):
                self.used.add(name)
                return name
        raise RuntimeError("could not invent a new name")  # 1000 clashes: the syllable pools are far larger


def generate_world(seed: int, settings: WorldSettings = WorldSettings()) -> World:
    """The world of ``seed``: the same seed and settings always give the same world."""
    rng = random.Random(f"{GENERATOR_VERSION}:{seed}")
    names, wid = _Names(rng), world_id(seed)
    for value in (*_HOBBIES, *_OCCUPATIONS, *_SECTORS):
        names.used.add(value.capitalize())
    countries = [names.unique(lambda: names.word(rng.randint(2, 3), ("", "a", "ia", "land"))) for _ in range(settings.countries)]
    places = [Entity(f"{wid}/place{i}", "place", names.unique(lambda: names.word(2) + rng.choice(_PLACE_SUFFIXES)))
              for i in range(settings.places)]
    organisations = [Entity(f"{wid}/org{i}", "organisation",
                            names.unique(lambda: f"{names.word(2)} {rng.choice(_ORG_SUFFIXES)}"))
                     for i in range(settings.organisations)]
    people: list[Entity] = []
    for i in range(settings.people):
        family = [p.name.split()[1] for p in people]

        def person_name(family: list[str] = family) -> str:
            last = rng.choice(family) if family and rng.random() < settings.similar_names else names.word(2)
            return f"{names.word(rng.randint(1, 2), ('', 'a', 'o', 'en'))} {last}"

        people.append(Entity(f"{wid}/person{i}", "person", names.unique(person_name),
                             extras={"occupation": rng.choice(_OCCUPATIONS), "pronoun": rng.choice(["he", "she"])}))
    for person in people:
        person.facts.update(born_in=rng.choice(places).id, employer=rng.choice(organisations).id,
                            hobby=rng.choice(_HOBBIES))
    # Mothers come from the first half (an older generation), spouses pair people up: no cycles, one value each.
    elders = people[: len(people) // 2]
    for person in people[len(people) // 2:]:
        if rng.random() < 0.7:
            person.facts["mother"] = rng.choice([p for p in elders if p.extras["pronoun"] == "she"] or elders).id
    unmarried = [p for p in people]
    rng.shuffle(unmarried)
    for a, b in zip(unmarried[0::2], unmarried[1::2]):
        if rng.random() < 0.6:
            a.facts["spouse"], b.facts["spouse"] = b.id, a.id
    for org in organisations:
        org.facts.update(founder=rng.choice(people).id, city=rng.choice(places).id, founded=str(rng.randint(1850, 2015)))
        org.extras["sector"] = rng.choice(_SECTORS)
    for place in places:
        place.facts.update(country=rng.choice(countries), mayor=rng.choice(people).id)
    entities = {e.id: e for e in (*people, *organisations, *places)}
    articles = {e.id: _article(e, entities, settings.distractors, rng) for e in entities.values()}
    world = World(wid, seed, settings, entities, articles, [])
    world.questions = _questions(world, rng)
    return world


def _value(entities: dict[str, Entity], value: str) -> str:
    return entities[value].name if value in entities else value


def _article(entity: Entity, entities: dict[str, Entity], distractors: int, rng: random.Random) -> str:
    pronoun = entity.extras.get("pronoun", "it")
    possessive = {"he": "His", "she": "Her"}.get(pronoun, "Its")
    fill = {"x": entity.name, "s": pronoun.capitalize(), "s_low": pronoun, "p": possessive, "p_low": possessive.lower()}
    sentences = [rng.choice(_SENTENCES[relation]).format(y=_value(entities, value), **fill)
                 for relation, value in entity.facts.items()]
    others = {kind: [e.name for e in entities.values() if e.kind == kind and e.id != entity.id]
              for kind in ("person", "organisation", "place")}
    templates = list(_DISTRACTORS[entity.kind])
    rng.shuffle(templates)
    sentences += [template.format(**fill, **{kind: rng.choice(names) for kind, names in others.items()})
                  for template in templates[:distractors]]
    rng.shuffle(sentences)
    return " ".join([_INTRO[entity.kind].format(**fill, **entity.extras)] + sentences)


def _chains(world: World, start: Entity, hops: int) -> Iterator[tuple[list[str], list[Entity], str]]:
    """Every path of ``hops`` relations from ``start`` through distinct entities: (relations, entities read, answer)."""
    def walk(entity: Entity, relations: list[str], seen: list[Entity]) -> Iterator[tuple[list[str], list[Entity], str]]:
        for relation, value in entity.facts.items():
            if len(relations) + 1 == hops:
                if value not in (e.id for e in seen):
                    yield relations + [relation], seen, _value(world.entities, value)
            elif value in world.entities and world.entities[value] not in seen:
                yield from walk(world.entities[value], relations + [relation], seen + [world.entities[value]])

    yield from walk(start, [], [start])


def _question_text(relations: Sequence[str], start: str) -> str:
    phrase = start
    for relation in relations[:-1]:
        phrase = _PHRASE[relation].format(x=phrase)
    return _QUESTION[relations[-1]].format(x=phrase)


def _questions(world: World, rng: random.Random) -> list[Question]:
    """``settings.questions`` distinct questions, hop counts drawn evenly, each with a unique answer."""
    settings, entities = world.settings, list(world.entities.values())
    candidates = {hops: [(start, chain) for start in entities for chain in _chains(world, start, hops)]
                  for hops in settings.hops}
    for pool in candidates.values():
        rng.shuffle(pool)
    questions: list[Question] = []
    seen_texts: set[str] = set()
    order = [settings.hops[i % len(settings.hops)] for i in range(settings.questions)]
    rng.shuffle(order)
    for hops in order:
        while candidates[hops]:
            start, (relations, read, answer) = candidates[hops].pop()
            text = _question_text(relations, start.name)
            if text in seen_texts or answer.lower() in text.lower():
                continue  # the same question twice, or its answer inside it
            seen_texts.add(text)
            facts = tuple(_FACT[r].format(x=e.name, y=_value(world.entities, e.facts[r])) for r, e in zip(relations, read))
            questions.append(Question(f"{world.id}-q{len(questions)}", text, answer, world.id, hops, tuple(relations),
                                      tuple(e.name for e in read), tuple(e.id for e in read), facts))
            break
    return questions


def settings_record(settings: WorldSettings) -> dict:
    """The settings as the ``world.json`` of a folder records them."""
    return {**asdict(settings), "hops": list(settings.hops)}
