"""Concept specs and the prompt sets that FADE trains on (DESIGN.md 2.1).

A :class:`ConceptSpec` says what one concept is called (name + synonyms), what neutral phrase
replaces it (``anchor``), what it may turn into (``surrogate``) and how prompts invoke it
(``templates``). :func:`build_prompt_sets` turns the concepts to erase into the aligned prompt
lists P_c, P_¬c, P_s, the synonym prompts and the retain prompts P_r. Catalogs (named groups of
specs) and their file format live in :mod:`fade.catalog`; this module also validates one concept
entry (:meth:`ConceptSpec.from_dict`), which catalog files reuse.

Phrase convention: a template's ``{}`` receives a whole noun phrase. Names, synonyms and the
surrogate are written bare ("airplane", "Brad Pitt", "cubism") and get an indefinite article
("an airplane") when ``article`` is true; ``None`` (the default) adds one unless the term starts
with a capital letter (proper names). A term that already starts with a determiner ("a naked
person", "the Eiffel Tower") is used as written. The ``anchor`` is used verbatim and already
carries its article ("an object", "a person"); ``""`` removes the concept from the prompt.

Not here: tokenisation, text encoding, sampling or detection; this module only handles text.
Errors in user input raise :class:`ConceptError` with a one-line message.
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from fade.errors import FadeError

if TYPE_CHECKING:
    from fade.catalog import Catalog

__all__ = [
    "DEFAULT_TEMPLATES",
    "GENERIC_RETAIN",
    "ConceptError",
    "ConceptSpec",
    "PromptSets",
    "build_prompt_sets",
    "mentions",
    "render_prompt",
    "with_anchor",
    "with_surrogate",
]

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of {}",
    "a close-up photo of {}",
    "a drawing of {}",
    "a painting of {}",
    "{} in the center of the image",
)
#: Retain captions used when no catalog (or a catalog without ``retain``) is given.
GENERIC_RETAIN: tuple[str, ...] = (
    "a photo of a tree",
    "a city skyline at night",
    "a mountain lake at sunrise",
    "a bowl of soup on a wooden table",
    "a snowy field under a grey sky",
    "a cup of coffee next to a notebook",
    "an empty road through a desert",
    "a beach at sunset",
    "a stack of old books",
    "a foggy forest path",
    "a red door in a white wall",
    "a field of wheat in summer",
)

_CONCEPT_KEYS = ("name", "category", "synonyms", "anchor", "surrogate", "templates", "article")
_DETERMINERS = ("a", "an", "the", "some", "two", "three", "several", "many")
_A_BEFORE_VOWEL = ("uni", "use", "usu", "uk", "ure", "eu", "ewe", "one", "once")
_AN_BEFORE_H = ("hour", "honest", "honor", "honour", "heir")


class ConceptError(FadeError):
    """A concept, catalog or catalog file is unknown or malformed (one-line message)."""


def _key(text: str) -> str:
    """Lookup key: case-, space-, underscore- and hyphen-insensitive."""
    return " ".join(re.sub(r"[_\-]+", " ", text).lower().split())


def _has_determiner(term: str) -> bool:
    return term.split(" ", 1)[0].lower() in _DETERMINERS and " " in term.strip()


def _bare(term: str) -> str:
    """The term without a leading determiner, lower-cased ("a naked person" -> "naked person")."""
    term = " ".join(term.split())
    return (term.split(" ", 1)[1] if _has_determiner(term) else term).lower()


def indefinite_article(word: str) -> str:
    """'a' or 'an' for ``word`` by spelling (with the usual exceptions: a unicorn, an hour)."""
    low = word.lower()
    if low.startswith(_AN_BEFORE_H):
        return "an"
    if low.startswith(_A_BEFORE_VOWEL):
        return "a"
    return "an" if low[:1] in "aeiou" and low[:1] else "a"


_DANGLING = re.compile(r"\s+(by|in the style of|painted by)\s*$")


def render_prompt(template: str, phrase: str) -> str:
    """Put ``phrase`` into ``template``'s ``{}``; tidy what an empty phrase leaves behind.

    Spaces, commas and a trailing "by" / "in the style of" go: removing the artist from
    "a circle by {}" gives "a circle", not "a circle by".
    """
    text = " ".join(template.replace("{}", phrase).split())
    if not phrase.strip():
        text = _DANGLING.sub("", text)
    text = re.sub(r"\s+([,.;:!?'])", r"\1", text)
    text = re.sub(r",(\s*,)+", ",", text)
    return text.strip(" ,")


@dataclass(frozen=True)
class ConceptSpec:
    """One concept: its names, its neutral anchor, an optional surrogate and prompt templates.

    Lists are accepted for ``synonyms``/``templates`` and stored as tuples. Raises
    :class:`ConceptError` for an empty name, a template without exactly one ``{}``, a synonym
    repeating the name, or a surrogate equal to the concept.
    """

    name: str
    category: str = "object"
    synonyms: tuple[str, ...] = ()
    anchor: str = "an object"
    surrogate: str | None = None
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    article: bool | None = None

    def __post_init__(self) -> None:
        syns = (self.synonyms,) if isinstance(self.synonyms, str) else self.synonyms
        temps = (self.templates,) if isinstance(self.templates, str) else self.templates
        object.__setattr__(self, "name", " ".join(str(self.name).split()))
        object.__setattr__(self, "synonyms", tuple(" ".join(str(s).split()) for s in syns))
        object.__setattr__(self, "templates", tuple(temps))
        if not self.name:
            raise ConceptError("a concept needs a non-empty name")
        where = f"concept {self.name!r}"
        if "{}" in self.anchor or "{}" in (self.surrogate or ""):
            raise ConceptError(f"{where}: the anchor and surrogate are phrases, not templates")
        if self.surrogate is not None and not self.surrogate.strip():
            raise ConceptError(f"{where}: the surrogate is empty (leave it out for none)")
        if not self.templates:
            raise ConceptError(f"{where}: no templates (give at least one, e.g. 'a photo of {{}}')")
        for template in self.templates:
            if template.count("{}") != 1:
                raise ConceptError(
                    f"{where}: template {template!r} must contain the placeholder {{}} exactly once"
                )
        seen: set[str] = set()
        for term in self.terms:
            if not term:
                raise ConceptError(f"{where}: empty synonym")
            if _bare(term) in seen:
                raise ConceptError(f"{where}: synonym {term!r} repeats the name or a synonym")
            seen.add(_bare(term))
        if self.surrogate is not None and _bare(self.surrogate) in seen:
            raise ConceptError(
                f"{where}: surrogate {self.surrogate!r} is the concept itself; "
                "pick a different concept to turn it into"
            )

    @property
    def terms(self) -> tuple[str, ...]:
        """The name followed by the synonyms, as written."""
        return (self.name, *self.synonyms)

    def phrase_for(self, term: str) -> str:
        """The noun phrase a template receives for ``term`` (adds 'a'/'an' per ``article``)."""
        term = " ".join(term.split())
        wants = self.article if self.article is not None else not term[:1].isupper()
        if not wants or not term or _has_determiner(term):
            return term
        return f"{indefinite_article(term)} {term}"

    @property
    def phrase(self) -> str:
        """The noun phrase for the concept's name ("an airplane", "Brad Pitt")."""
        return self.phrase_for(self.name)

    @property
    def phrases(self) -> tuple[str, ...]:
        """Noun phrases for the name and every synonym."""
        return tuple(self.phrase_for(t) for t in self.terms)

    @property
    def surrogate_phrase(self) -> str | None:
        """The surrogate as a noun phrase, or None without a surrogate."""
        return None if self.surrogate is None else self.phrase_for(self.surrogate)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for manifests); :meth:`from_dict` reads it back."""
        return {
            "name": self.name,
            "category": self.category,
            "synonyms": list(self.synonyms),
            "anchor": self.anchor,
            "surrogate": self.surrogate,
            "templates": list(self.templates),
            "article": self.article,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptSpec:
        """Build a spec from :meth:`to_dict` output or a catalog entry (after defaults)."""
        return _spec_from_entry(dict(data), {})


def with_surrogate(spec: ConceptSpec, surrogate: str | None) -> ConceptSpec:
    """A copy of ``spec`` with ``surrogate`` (None removes it); validated like any spec."""
    return replace(spec, surrogate=surrogate)


def with_anchor(spec: ConceptSpec, anchor: str) -> ConceptSpec:
    """A copy of ``spec`` with ``anchor`` (a full phrase such as "a person"; "" removes c)."""
    return replace(spec, anchor=anchor)


@lru_cache(maxsize=4096)
def _term_pattern(term: str) -> re.Pattern[str]:
    words = _bare(term).split()
    last = words[-1]
    forms = [re.escape(last) + "(?:s|es)?"]
    if len(last) > 1 and last.endswith("y") and last[-2] not in "aeiou":
        forms.append(re.escape(last[:-1]) + "ies")
    body = r"\s+".join([*map(re.escape, words[:-1]), "(?:" + "|".join(forms) + ")"])
    return re.compile(r"(?<!\w)" + body + r"(?!\w)", re.IGNORECASE)


def mentions(text: str, spec: ConceptSpec) -> bool:
    """True when ``text`` names ``spec`` or a synonym as whole words (simple plurals too)."""
    return any(_term_pattern(term).search(text) for term in spec.terms)


def _suggest(word: str, choices: Iterable[str]) -> str:
    """'; did you mean: x, y?' for close matches (compared case-insensitively), else ''."""
    by_key = {_key(choice): choice for choice in choices}
    close = difflib.get_close_matches(_key(word), list(by_key), n=3, cutoff=0.6)
    return f"; did you mean: {', '.join(by_key[c] for c in close)}?" if close else ""


def _expect(value: Any, kind: type, where: str, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConceptError(f"{where}: {what} must be a {kind.__name__}, got {value!r}")
    return value


def _str_list(value: Any, where: str, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    items = _expect(value, list, where, what)
    return tuple(_expect(item, str, where, f"each entry of {what}") for item in items)


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ConceptError(
            f"{where}: unknown key {unknown[0]!r}{_suggest(unknown[0], allowed)} "
            f"(allowed: {', '.join(allowed)})"
        )


def _spec_from_entry(entry: Any, defaults: Mapping[str, Any], prefix: str = "") -> ConceptSpec:
    """A spec from a catalog entry; ``prefix`` ("catalog 'x': ") starts every error message."""
    if isinstance(entry, str):
        entry = {"name": entry}
    entry = _expect(entry, dict, prefix + "concept entry", "an entry")
    if not isinstance(entry.get("name"), str):
        raise ConceptError(f"{prefix}concept entry {entry!r} has no 'name' string")
    where = f"{prefix}concept {entry['name']!r}"
    _check_keys(entry, _CONCEPT_KEYS, where)
    merged = {**defaults, **entry}
    kwargs: dict[str, Any] = {}
    for key, kind in (("name", str), ("category", str), ("anchor", str), ("surrogate", str)):
        if merged.get(key) is not None:
            kwargs[key] = _expect(merged[key], kind, where, f"'{key}'")
    for key in ("synonyms", "templates"):
        if merged.get(key) is not None:
            kwargs[key] = _str_list(merged[key], where, f"'{key}'")
    if merged.get("article") is not None:
        kwargs["article"] = _expect(merged["article"], bool, where, "'article'")
    try:
        return ConceptSpec(**kwargs)
    except ConceptError as exc:
        raise ConceptError(f"{prefix}{exc}") from None


@dataclass
class PromptSets:
    """The prompt lists of DESIGN.md 2.1 for K concepts.

    ``target`` (P_c), ``neutral`` (P_¬c) and ``surrogate`` (P_s) are aligned row by row: row i
    uses template ``template_of[i]`` with the concept phrase for ``term_of[i]``, the anchor, or the
    surrogate. ``concept_of[i]`` is the index into ``concepts`` of row i (the label for a K+1-way
    discriminator, "none" being K). ``surrogate`` is empty when no concept has a surrogate; a
    concept without one uses its neutral prompt there. ``synonyms`` holds prompts built only from
    synonyms (generality), labelled by ``synonyms_concept_of``. ``retain`` (P_r) never mentions
    an erased concept. ``contrast[i]`` is row i's sentence with a same-category neighbour in
    the concept's place ("a red diamond" -> "a red circle"), or "" where no neighbour exists;
    ``neighbours[k]`` holds concept k's neighbours as noun phrases, so that training can put
    each of them in a row's place in turn (:meth:`contrast_with`).
    """

    concepts: list[ConceptSpec]
    target: list[str]
    neutral: list[str]
    surrogate: list[str]
    concept_of: list[int]
    template_of: list[str]
    term_of: list[str]
    synonyms: list[str]
    synonyms_concept_of: list[int]
    retain: list[str]
    seed: int
    contrast: list[str] = field(default_factory=list)
    neighbours: list[list[str]] = field(default_factory=list)

    def contrast_with(self, row: int, phrase: str) -> str:
        """Row `row`'s sentence with `phrase` in the concept's place, or "" when that sentence
        names an erased concept ("a circle by velmora" while velmora is erased)."""
        prompt = render_prompt(self.template_of[row], phrase)
        return "" if any(mentions(prompt, spec) for spec in self.concepts) else prompt

    @property
    def names(self) -> list[str]:
        """Concept names; ``concept_of`` indexes into this list."""
        return [spec.name for spec in self.concepts]

    @property
    def has_surrogate(self) -> bool:
        return bool(self.surrogate)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (concepts as :meth:`ConceptSpec.to_dict`)."""
        data = {k: v for k, v in vars(self).items() if k != "concepts"}
        return {"concepts": [spec.to_dict() for spec in self.concepts], **data}


def _draw(pool: Sequence[Any], n: int, rng: random.Random) -> list[Any]:
    """``n`` items from ``pool``: a shuffled pass, repeated (reshuffled) when n exceeds it."""
    out: list[Any] = []
    while pool and len(out) < n:
        batch = list(pool)
        rng.shuffle(batch)
        out.extend(batch[: n - len(out)])
    return out


def build_prompt_sets(
    concepts: Sequence[ConceptSpec],
    catalog: Catalog | None = None,
    n_per_concept: int = 32,
    n_retain: int = 32,
    seed: int = 0,
    neighbour_share: float = 1 / 3,
) -> PromptSets:
    """Build P_c, P_¬c, P_s, synonym and retain prompts for ``concepts`` (deterministic per seed).

    Each concept draws ``n_per_concept`` target rows from templates x (name + synonyms) with its
    own generator seeded by ``(seed, name)``; with several concepts, templates whose neutral
    prompt names another erased concept are left out (see :func:`templates_apart`). Retain
    prompts interleave the catalog's generic captions (:data:`GENERIC_RETAIN` without a
    catalog), same-category neighbours (`neighbour_share` of them) and other concepts, dropping
    any that mention an erased concept, its synonyms or their plurals.
    """
    if not concepts:
        raise ConceptError("no concepts to erase: give at least one concept")
    if n_per_concept < 1 or n_retain < 0:
        raise ConceptError(
            f"n_per_concept must be >= 1 and n_retain >= 0, got {n_per_concept} and {n_retain}"
        )
    keys = [_key(spec.name) for spec in concepts]
    if len(set(keys)) != len(keys):
        dup = next(spec.name for spec, k in zip(concepts, keys, strict=True) if keys.count(k) > 1)
        raise ConceptError(f"concept {dup!r} is listed twice")
    sets = PromptSets(list(concepts), [], [], [], [], [], [], [], [], [], seed)
    any_surrogate = any(spec.surrogate is not None for spec in concepts)
    retained = _retained(concepts, catalog)
    for index, spec in enumerate(concepts):
        rng = random.Random(f"{seed}/{spec.name}")
        templates = templates_apart(spec, concepts)
        rows = _draw([(t, term) for t in templates for term in spec.terms], n_per_concept, rng)
        neighbours = [other for other in retained if other.category == spec.category]
        sets.neighbours.append([other.phrase_for(other.name) for other in neighbours])
        contrast_rng = random.Random(f"{seed}/{spec.name}/contrast")  # leaves `rng`'s draws be
        for template, term in rows:
            sets.target.append(render_prompt(template, spec.phrase_for(term)))
            sets.contrast.append(_contrast(template, neighbours, concepts, contrast_rng))
            sets.neutral.append(render_prompt(template, spec.anchor))
            if any_surrogate:
                other = spec.surrogate_phrase
                sets.surrogate.append(render_prompt(template, other or spec.anchor))
            sets.concept_of.append(index)
            sets.template_of.append(template)
            sets.term_of.append(term)
        pool = [(t, s) for t in templates for s in spec.synonyms]
        for template, term in _draw(pool, n_per_concept, rng):
            sets.synonyms.append(render_prompt(template, spec.phrase_for(term)))
            sets.synonyms_concept_of.append(index)
    sets.retain = _retain_prompts(
        concepts, catalog, n_retain, random.Random(f"{seed}/retain"), neighbour_share
    )
    return sets


def neighbour_rows(contrast: Sequence[str], paired_prompts: str | None) -> int:
    """How many rows paired preservation holds a neighbour sentence for: the rows that have
    one, when `paired_prompts` is "neighbours" (else none). The erasure loop and the printed
    plan both decide from this."""
    return sum(1 for prompt in contrast if prompt) if paired_prompts == "neighbours" else 0


def _retained(erased: Sequence[ConceptSpec], catalog: Catalog | None) -> list[ConceptSpec]:
    """The catalog's concepts that share no name or synonym with an erased concept."""
    erased_keys = {_key(term) for spec in erased for term in spec.terms}
    return [spec for spec in catalog or () if erased_keys.isdisjoint(_key(t) for t in spec.terms)]


def _contrast(
    template: str,
    neighbours: Sequence[ConceptSpec],
    erased: Sequence[ConceptSpec],
    rng: random.Random,
) -> str:
    """`template` with a random neighbour's name in the concept's place ("" without one)."""
    if not neighbours:
        return ""
    neighbour = neighbours[rng.randrange(len(neighbours))]
    prompt = render_prompt(template, neighbour.phrase_for(neighbour.name))
    return "" if any(mentions(prompt, spec) for spec in erased) else prompt


def templates_apart(spec: ConceptSpec, erased: Sequence[ConceptSpec]) -> tuple[str, ...]:
    """`spec`'s templates whose neutral prompt names no other erased concept.

    Why: in a mass erasure, "a {} by velmora" gives diamond the neutral prompt "a shape by
    velmora", and "a heart by {}" gives velmora "a heart"; preserving those would keep the very
    concepts the run erases. If every template names one, all are kept (nothing better exists).
    """
    others = [other for other in erased if other is not spec]
    apart = tuple(
        template
        for template in spec.templates
        if not any(mentions(render_prompt(template, spec.anchor), other) for other in others)
    )
    return apart or spec.templates


def _round_robin(streams: Sequence[Sequence[str]]) -> list[str]:
    longest = max((len(stream) for stream in streams), default=0)
    return [stream[i] for i in range(longest) for stream in streams if i < len(stream)]


def _interleave(streams: Sequence[Sequence[str]], weights: Sequence[float]) -> list[str]:
    """All items of `streams`, each stream's share of every prefix close to its weight (smooth
    weighted round robin); equal weights give plain round robin. An exhausted stream drops out.
    """
    if max(weights, default=0) - min(weights, default=0) < 1e-9:
        return _round_robin(streams)
    position, credit, order = [0] * len(streams), [0.0] * len(streams), []
    live = [i for i, stream in enumerate(streams) if stream and weights[i] > 0]
    while live:
        total = sum(weights[i] for i in live)
        for i in live:
            credit[i] += weights[i]
        pick = max(live, key=lambda i: credit[i])
        credit[pick] -= total
        order.append(streams[pick][position[pick]])
        position[pick] += 1
        live = [i for i in live if position[i] < len(streams[i])]
    return order


def _retain_prompts(
    erased: Sequence[ConceptSpec],
    catalog: Catalog | None,
    n: int,
    rng: random.Random,
    neighbour_share: float = 1 / 3,
) -> list[str]:
    """Captions, same-category neighbours' prompts and other concepts' prompts, interleaved so
    that neighbours make up `neighbour_share` of them (1/3: the three kinds in turn), none
    mentioning an erased concept.

    Catalog concepts sharing a name or synonym with an erased concept are not retained at all.
    """

    def keep(prompt: str) -> bool:
        return not any(mentions(prompt, spec) for spec in erased)

    captions = catalog.retain if catalog and catalog.retain else GENERIC_RETAIN
    caption_stream = [c for c in dict.fromkeys(captions) if keep(c)]
    erased_categories = {spec.category for spec in erased}
    neighbours: list[list[str]] = []  # same category: where an erasure spills over first
    others: list[list[str]] = []
    for spec in _retained(erased, catalog):
        prompts = {render_prompt(t, p) for t in spec.templates for p in spec.phrases}
        stream = [p for p in sorted(prompts) if keep(p)]
        (neighbours if spec.category in erased_categories else others).append(stream)
    for stream in (caption_stream, *neighbours, *others):
        rng.shuffle(stream)
    rng.shuffle(neighbours)
    rng.shuffle(others)
    streams = [caption_stream, _round_robin(neighbours), _round_robin(others)]
    rest = (1 - neighbour_share) / 2
    weights = [rest, neighbour_share, rest]
    kept = [(stream, weight) for stream, weight in zip(streams, weights, strict=True) if stream]
    order = _interleave([s for s, _ in kept], [w for _, w in kept])
    return [order[i % len(order)] for i in range(n)] if order else []
