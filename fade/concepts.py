"""Concept specs, concept catalogs and the prompt sets that FADE trains on (DESIGN.md 2.1).

A :class:`ConceptSpec` says what one concept is called (name + synonyms), what neutral phrase
replaces it (``anchor``), what it may turn into (``surrogate``) and how prompts invoke it
(``templates``). A :class:`Catalog` groups specs, loaded from a built-in file in
``fade/catalogs/`` (:func:`list_catalogs`) or a user YAML/JSON file (:func:`load_catalog`).
:func:`build_prompt_sets` turns the concepts to erase into the aligned prompt lists P_c, P_¬c,
P_s, the synonym prompts and the retain prompts P_r.

Catalog file (YAML or JSON, same keys; ``docs/catalogs.md`` has the full reference)::

    name: cifar10                   # optional, defaults to the file name
    description: CIFAR-10 classes
    defaults:                       # any concept key; a concept's own value wins
      category: object
      anchor: an object
      templates: ["a photo of {}", "a drawing of {}"]
    retain: ["a photo of a tree"]   # optional generic retain captions
    sets: {vehicles: [airplane, ship]}   # optional named subsets ("all" is implicit)
    concepts:
      - name: airplane
        synonyms: [aeroplane, jet]
        # optional: category, anchor, surrogate, templates, article
      - ship                        # a bare string is a concept with only defaults

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
import json
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fade.errors import FadeError

__all__ = [
    "DEFAULT_TEMPLATES",
    "GENERIC_RETAIN",
    "Catalog",
    "ConceptError",
    "ConceptSpec",
    "PromptSets",
    "build_prompt_sets",
    "catalog_from_dict",
    "list_catalogs",
    "load_catalog",
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

_CATALOG_SUFFIXES = (".yaml", ".yml", ".json")
_CONCEPT_KEYS = ("name", "category", "synonyms", "anchor", "surrogate", "templates", "article")
_TOP_KEYS = ("name", "description", "defaults", "retain", "sets", "concepts")
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


def render_prompt(template: str, phrase: str) -> str:
    """Put ``phrase`` into ``template``'s ``{}``; tidy spaces and commas left by an empty phrase."""
    text = " ".join(template.replace("{}", phrase).split())
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
        object.__setattr__(self, "name", " ".join(str(self.name).split()))
        object.__setattr__(self, "synonyms", tuple(" ".join(s.split()) for s in self.synonyms))
        object.__setattr__(self, "templates", tuple(self.templates))
        if not self.name:
            raise ConceptError("a concept needs a non-empty name")
        where = f"concept {self.name!r}"
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
        return _spec_from_entry(data, {}, where="concept")


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
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean: {', '.join(close)}?" if close else ""


def _preview(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


@dataclass(frozen=True)
class Catalog:
    """A named collection of concept specs, generic retain captions and named subsets."""

    name: str
    concepts: dict[str, ConceptSpec]
    description: str = ""
    retain: tuple[str, ...] = ()
    sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.concepts:
            raise ConceptError(f"catalog {self.name!r}: the concept list is empty")
        index: dict[str, str] = {}
        for spec in self.concepts.values():
            for term in spec.terms:
                other = index.setdefault(_key(term), spec.name)
                if other != spec.name or (term == spec.name and _key(term) in self._keys()):
                    what = "duplicate concept" if term == spec.name else f"term {term!r} used"
                    raise ConceptError(
                        f"catalog {self.name!r}: {what} {spec.name!r}"
                        + (f" also in concept {other!r}" if other != spec.name else "")
                    )
        object.__setattr__(self, "_index", index)
        for set_name, members in self.sets.items():
            for member in members:
                if _key(member) not in self._keys():
                    raise ConceptError(
                        f"catalog {self.name!r}: set {set_name!r} names unknown concept "
                        f"{member!r}{_suggest(member, self.names)}"
                    )

    def _keys(self) -> dict[str, str]:
        return {_key(name): name for name in self.concepts if _key(name) != "\0"}

    @property
    def names(self) -> list[str]:
        """Concept names in file order."""
        return list(self.concepts)

    @property
    def categories(self) -> dict[str, list[str]]:
        """Category -> concept names, in file order."""
        out: dict[str, list[str]] = {}
        for spec in self.concepts.values():
            out.setdefault(spec.category, []).append(spec.name)
        return out

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self):  # noqa: ANN204 - an iterator of ConceptSpec
        return iter(self.concepts.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._index  # type: ignore[attr-defined]

    def get(self, name: str) -> ConceptSpec:
        """The spec named ``name`` (case-insensitive; a synonym also finds its concept)."""
        owner = self._index.get(_key(name))  # type: ignore[attr-defined]
        if owner is None:
            hint = _suggest(name, self.names) or f"; its concepts: {_preview(self.names)}"
            raise ConceptError(f"unknown concept {name!r} in catalog {self.name!r}{hint}")
        return self.concepts[owner]

    def select(self, names: str | Iterable[str]) -> list[ConceptSpec]:
        """Specs for ``names`` in the given order, without repeats."""
        picked: dict[str, ConceptSpec] = {}
        for name in [names] if isinstance(names, str) else names:
            spec = self.get(name)
            picked.setdefault(spec.name, spec)
        return list(picked.values())

    def set(self, set_name: str) -> list[ConceptSpec]:
        """The specs of a named subset; ``"all"`` is every concept unless the file defines it."""
        sets = {_key(k): v for k, v in self.sets.items()}
        if _key(set_name) in sets:
            return self.select(sets[_key(set_name)])
        if _key(set_name) == "all":
            return list(self.concepts.values())
        choices = sorted({*self.sets, "all"})
        raise ConceptError(
            f"unknown set {set_name!r} in catalog {self.name!r}{_suggest(set_name, choices)}; "
            f"its sets: {', '.join(choices)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form that :func:`catalog_from_dict` reads back."""
        return {
            "name": self.name,
            "description": self.description,
            "retain": list(self.retain),
            "sets": {k: list(v) for k, v in self.sets.items()},
            "concepts": [spec.to_dict() for spec in self.concepts.values()],
        }


def _expect(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConceptError(f"{where}: {what} must be {names}, got {type(value).__name__}")
    return value


def _str_list(value: Any, where: str, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    items = _expect(value, list, where, what)
    return tuple(_expect(item, str, where, f"each entry of {what}") for item in items)


def _spec_from_entry(entry: Any, defaults: Mapping[str, Any], where: str) -> ConceptSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    entry = _expect(entry, dict, where, "a concept entry")
    name = _expect(entry.get("name"), str, where, "'name'")
    where = f"{where} {name!r}"
    unknown = sorted(set(entry) - set(_CONCEPT_KEYS))
    if unknown:
        raise ConceptError(
            f"{where}: unknown key {unknown[0]!r}{_suggest(unknown[0], _CONCEPT_KEYS)} "
            f"(allowed: {', '.join(_CONCEPT_KEYS)})"
        )
    merged = {**defaults, **entry}
    kwargs: dict[str, Any] = {"name": name}
    for key in ("category", "anchor"):
        if key in merged:
            kwargs[key] = _expect(merged[key], str, where, f"'{key}'")
    for key in ("synonyms", "templates"):
        if merged.get(key) is not None:
            kwargs[key] = _str_list(merged[key], where, f"'{key}'")
    if merged.get("surrogate") is not None:
        kwargs["surrogate"] = _expect(merged["surrogate"], str, where, "'surrogate'")
    if merged.get("article") is not None:
        kwargs["article"] = _expect(merged["article"], bool, where, "'article'")
    try:
        return ConceptSpec(**kwargs)
    except ConceptError as exc:
        raise ConceptError(f"{where.rsplit(' concept ', 1)[0]}: {exc}") from None


def catalog_from_dict(data: Any, *, name: str = "", source: str = "") -> Catalog:
    """Validate parsed catalog data (the file format above) and build a :class:`Catalog`."""
    where = f"catalog {name or source!r}"
    data = _expect(data, dict, where, "the top level")
    unknown = sorted(set(data) - set(_TOP_KEYS))
    if unknown:
        raise ConceptError(
            f"{where}: unknown key {unknown[0]!r}{_suggest(unknown[0], _TOP_KEYS)} "
            f"(allowed: {', '.join(_TOP_KEYS)})"
        )
    cat_name = _expect(data.get("name", name or Path(source).stem or "catalog"), str, where, "name")
    where = f"catalog {cat_name!r}"
    defaults = _expect(data.get("defaults") or {}, dict, where, "'defaults'")
    bad = sorted(set(defaults) - set(_CONCEPT_KEYS) | {"name"} & set(defaults))
    if bad:
        raise ConceptError(f"{where}: 'defaults' cannot set {bad[0]!r}")
    entries = _expect(data.get("concepts") or [], list, where, "'concepts'")
    if not entries:
        raise ConceptError(f"{where}: the concept list is empty (add entries under 'concepts')")
    concepts: dict[str, ConceptSpec] = {}
    for entry in entries:
        spec = _spec_from_entry(entry, defaults, where=f"{where} concept")
        if spec.name in concepts:
            raise ConceptError(f"{where}: duplicate concept {spec.name!r}")
        concepts[spec.name] = spec
    raw_sets = _expect(data.get("sets") or {}, dict, where, "'sets'")
    sets = {str(k): _str_list(v, where, f"set {k!r}") for k, v in raw_sets.items()}
    return Catalog(
        name=cat_name,
        concepts=concepts,
        description=_expect(data.get("description") or "", str, where, "'description'"),
        retain=_str_list(data.get("retain") or [], where, "'retain'"),
        sets=sets,
        source=source,
    )


def _builtin_dir() -> Any:
    return resources.files(__package__ or "fade").joinpath("catalogs")


def list_catalogs() -> list[str]:
    """Names of the built-in catalogs (files in ``fade/catalogs/``)."""
    root = _builtin_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.name.endswith(_CATALOG_SUFFIXES)
    )


def _parse(text: str, suffix: str, source: str) -> Any:
    try:
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())
        kind = "JSON" if suffix == ".json" else "YAML"
        raise ConceptError(f"catalog file {source}: invalid {kind}: {detail}") from None


def load_catalog(name_or_path: str | os.PathLike[str]) -> Catalog:
    """Load a built-in catalog by name, or a user catalog from a .yaml/.yml/.json path."""
    text_name = os.fspath(name_or_path)
    builtins = list_catalogs()
    looks_like_path = text_name.lower().endswith(_CATALOG_SUFFIXES) or os.sep in text_name
    if not looks_like_path and text_name.lower() in builtins:
        for suffix in _CATALOG_SUFFIXES:
            res = _builtin_dir().joinpath(text_name.lower() + suffix)
            if res.is_file():
                data = _parse(res.read_text(encoding="utf-8"), suffix, res.name)
                return catalog_from_dict(data, name=text_name.lower(), source=res.name)
    path = Path(text_name)
    if path.suffix.lower() in _CATALOG_SUFFIXES and path.is_file():
        data = _parse(path.read_text(encoding="utf-8"), path.suffix.lower(), str(path))
        return catalog_from_dict(data, name=path.stem, source=str(path))
    if looks_like_path:
        problem = "does not exist" if not path.exists() else "is not a .yaml/.yml/.json file"
        raise ConceptError(f"catalog file {text_name!r} {problem}")
    raise ConceptError(
        f"unknown catalog {text_name!r}{_suggest(text_name.lower(), builtins)}; built-in "
        f"catalogs: {', '.join(builtins) or '(none)'}; or give a path to a .yaml/.json file"
    )


@dataclass
class PromptSets:
    """The prompt lists of DESIGN.md 2.1 for K concepts.

    ``target`` (P_c), ``neutral`` (P_¬c) and ``surrogate`` (P_s) are aligned row by row: row i
    uses template ``template_of[i]`` with the concept phrase for ``term_of[i]``, the anchor, or the
    surrogate. ``concept_of[i]`` is the index into ``concepts`` of row i (the label for a K+1-way
    discriminator, "none" being K). ``surrogate`` is empty when no concept has a surrogate; a
    concept without one uses its neutral prompt there. ``synonyms`` holds prompts built only from
    synonyms (generality), labelled by ``synonyms_concept_of``. ``retain`` (P_r) never mentions
    an erased concept.
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
) -> PromptSets:
    """Build P_c, P_¬c, P_s, synonym and retain prompts for ``concepts`` (deterministic per seed).

    Each concept draws ``n_per_concept`` target rows from templates x (name + synonyms) with its
    own generator seeded by ``(seed, name)``, so adding a concept leaves the others' prompts
    unchanged. Retain prompts come round-robin from the catalog's other concepts and its generic
    captions (:data:`GENERIC_RETAIN` without a catalog), dropping any that mention an erased
    concept, its synonyms or their plurals.
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
    for index, spec in enumerate(concepts):
        rng = random.Random(f"{seed}/{spec.name}")
        rows = _draw([(t, term) for t in spec.templates for term in spec.terms], n_per_concept, rng)
        for template, term in rows:
            sets.target.append(render_prompt(template, spec.phrase_for(term)))
            sets.neutral.append(render_prompt(template, spec.anchor))
            if any_surrogate:
                other = spec.surrogate_phrase
                sets.surrogate.append(render_prompt(template, spec.anchor if other is None else other))
            sets.concept_of.append(index)
            sets.template_of.append(template)
            sets.term_of.append(term)
        pool = [(t, s) for t in spec.templates for s in spec.synonyms]
        for template, term in _draw(pool, n_per_concept, rng):
            sets.synonyms.append(render_prompt(template, spec.phrase_for(term)))
            sets.synonyms_concept_of.append(index)
    sets.retain = _retain_prompts(concepts, catalog, n_retain, random.Random(f"{seed}/retain"))
    return sets


def _retain_prompts(
    erased: Sequence[ConceptSpec], catalog: Catalog | None, n: int, rng: random.Random
) -> list[str]:
    erased_keys = {_key(spec.name) for spec in erased}

    def keep(prompt: str) -> bool:
        return not any(mentions(prompt, spec) for spec in erased)

    sources: list[list[str]] = []
    captions = (catalog.retain if catalog and catalog.retain else GENERIC_RETAIN)
    sources.append([c for c in dict.fromkeys(captions) if keep(c)])
    for spec in catalog or ():
        if _key(spec.name) not in erased_keys:
            prompts = {render_prompt(t, p) for t in spec.templates for p in spec.phrases}
            sources.append([p for p in sorted(prompts) if keep(p)])
    sources = [src for src in sources if src]
    for src in sources:
        rng.shuffle(src)
    rng.shuffle(sources)
    out: list[str] = []
    depth = 0
    while sources and len(out) < n:
        layer = [src[depth % len(src)] for src in sources]
        out.extend(layer[: n - len(out)])
        depth += 1
    return out
