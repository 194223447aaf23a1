"""Concept catalogs: the catalog file format, loading and validation (DESIGN.md 2.1).

A :class:`Catalog` groups :class:`~fade.concepts.ConceptSpec` objects with generic retain
captions and named subsets. Built-in catalogs are data files in ``fade/catalogs/``
(:func:`list_catalogs`); :func:`load_catalog` loads one by name or a user YAML/JSON file, and
:func:`catalog_from_dict` validates already-parsed data. Specs, phrases and prompt sets live in
:mod:`fade.concepts`; errors raise :class:`~fade.concepts.ConceptError` with a one-line message.

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
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from fade.concepts import (
    _CONCEPT_KEYS,
    ConceptError,
    ConceptSpec,
    _check_keys,
    _expect,
    _key,
    _spec_from_entry,
    _str_list,
    _suggest,
)

__all__ = ["Catalog", "catalog_from_dict", "list_catalogs", "load_catalog"]

_CATALOG_SUFFIXES = (".yaml", ".yml", ".json")
_TOP_KEYS = ("name", "description", "defaults", "retain", "sets", "concepts")


@dataclass(frozen=True)
class Catalog:
    """A named collection of concept specs, generic retain captions and named subsets."""

    name: str
    concepts: dict[str, ConceptSpec]
    description: str = ""
    retain: tuple[str, ...] = ()
    sets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""
    _index: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.concepts:
            raise ConceptError(f"catalog {self.name!r}: the concept list is empty")
        for spec in self.concepts.values():
            for term in spec.terms:
                owner = self._index.setdefault(_key(term), spec.name)
                if owner == spec.name:
                    continue
                if _key(term) == _key(owner) and term == spec.name:
                    raise ConceptError(f"catalog {self.name!r}: duplicate concept {spec.name!r}")
                raise ConceptError(
                    f"catalog {self.name!r}: {term!r} of concept {spec.name!r} is already a name "
                    f"or synonym of concept {owner!r}"
                )
        for set_name, members in self.sets.items():
            for member in members:
                if _key(member) not in self._index:
                    raise ConceptError(
                        f"catalog {self.name!r}: set {set_name!r} names unknown concept "
                        f"{member!r}{_suggest(member, self.names)}"
                    )

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

    def __iter__(self) -> Iterator[ConceptSpec]:
        return iter(self.concepts.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._index

    def get(self, name: str) -> ConceptSpec:
        """The spec named ``name`` (case-insensitive; a synonym also finds its concept)."""
        owner = self._index.get(_key(name))
        if owner is None:
            listed = ", ".join(self.names[:12]) + (", ..." if len(self) > 12 else "")
            hint = _suggest(name, self.names) or f"; its concepts: {listed}"
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


def catalog_from_dict(data: Any, *, name: str = "", source: str = "") -> Catalog:
    """Validate parsed catalog data (the file format above) and build a :class:`Catalog`."""
    where = f"catalog {name or source!r}"
    data = _expect(data, dict, where, "the top level")
    _check_keys(data, _TOP_KEYS, where)
    cat_name = _expect(data.get("name") or name or "catalog", str, where, "'name'")
    where = f"catalog {cat_name!r}"
    defaults = _expect(data.get("defaults") or {}, dict, where, "'defaults'")
    _check_keys(defaults, _CONCEPT_KEYS[1:], f"{where}: 'defaults'")
    entries = _expect(data.get("concepts") or [], list, where, "'concepts'")
    if not entries:
        raise ConceptError(f"{where}: the concept list is empty (add entries under 'concepts')")
    concepts: dict[str, ConceptSpec] = {}
    for entry in entries:
        spec = _spec_from_entry(entry, defaults, prefix=f"{where}: ")
        if spec.name in concepts:
            raise ConceptError(f"{where}: duplicate concept {spec.name!r}")
        concepts[spec.name] = spec
    raw_sets = _expect(data.get("sets") or {}, dict, where, "'sets'")
    return Catalog(
        name=cat_name,
        concepts=concepts,
        description=_expect(data.get("description") or "", str, where, "'description'"),
        retain=_str_list(data.get("retain") or [], where, "'retain'"),
        sets={str(k): _str_list(v, where, f"set {k!r}") for k, v in raw_sets.items()},
        source=source,
    )


def _builtin_dir() -> Any:
    """``fade/catalogs`` as a Traversable (a plain path while ``fade`` is a namespace package)."""
    try:
        return resources.files(__package__ or "fade").joinpath("catalogs")
    except (TypeError, OSError):
        return Path(__file__).with_name("catalogs")


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
    looks_like_path = text_name.lower().endswith(_CATALOG_SUFFIXES) or "/" in text_name
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
