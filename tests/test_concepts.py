"""Concept specs, catalogs (built-in and user files), prompt sets (fade.concepts, fade.catalog)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fade.catalog import Catalog, catalog_from_dict, list_catalogs, load_catalog
from fade.concepts import (
    GENERIC_RETAIN,
    ConceptError,
    ConceptSpec,
    build_prompt_sets,
    mentions,
    render_prompt,
    with_anchor,
    with_surrogate,
)
from fade.errors import FadeError

BUILTINS = ("artists", "celebrities", "cifar10", "explicit", "mass100")


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def _says(prompt: str, term: str) -> bool:
    """Independent word-level check: does ``prompt`` contain ``term`` (or its plural)?"""
    words = re.findall(r"\w+", term.lower())
    if words[0] in ("a", "an", "the") and len(words) > 1:
        words = words[1:]
    text = _words(prompt)
    stems = [" ".join(words)]
    stems += [" ".join([*words[:-1], words[-1] + end]) for end in ("s", "es")]
    return any(f" {stem} " in text for stem in stems)


def _user_catalog() -> dict[str, Any]:
    return {
        "name": "pets",
        "description": "a small user catalog",
        "defaults": {"category": "animal", "anchor": "an animal", "templates": ["a photo of {}"]},
        "retain": ["a photo of a garden", "a bowl of water"],
        "sets": {"small": ["hamster", "goldfish"]},
        "concepts": [
            {"name": "hamster", "synonyms": ["gerbil"], "surrogate": "teapot"},
            {"name": "goldfish", "templates": ["{} in a bowl", "a drawing of {}"]},
            {"name": "parrot", "synonyms": ["macaw", "cockatoo"], "anchor": "a bird"},
            "iguana",
        ],
    }


def _error(exc: pytest.ExceptionInfo[ConceptError]) -> str:
    message = str(exc.value)
    assert isinstance(exc.value, FadeError)
    assert "\n" not in message and message
    return message


# ----------------------------------------------------------------------------- built-in catalogs


def test_builtin_catalogs_are_listed() -> None:
    assert set(BUILTINS) <= set(list_catalogs())


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_catalog_loads_and_validates(name: str) -> None:
    catalog = load_catalog(name)
    assert catalog.name == name and catalog.description and len(catalog) >= 4
    keys = [spec.name.lower() for spec in catalog]
    assert len(set(keys)) == len(keys)
    for spec in catalog:
        assert catalog.get(spec.name) is spec and catalog.get(spec.name.upper()) is spec
        assert spec.templates and all(t.count("{}") == 1 for t in spec.templates)
        assert spec.category and isinstance(spec.anchor, str)
        for phrase in spec.phrases:
            assert phrase and phrase in render_prompt(spec.templates[0], phrase)
    assert catalog.set("all") == list(catalog)
    for set_name in catalog.sets:
        assert catalog.set(set_name)
    # Erasing everything still leaves generic captions to retain.
    sets = build_prompt_sets(list(catalog), catalog, n_per_concept=2, n_retain=8, seed=0)
    assert len(sets.retain) == 8


def test_mass100_has_10_categories_of_10() -> None:
    catalog = load_catalog("mass100")
    assert len(catalog) == 100
    categories = catalog.categories
    assert len(categories) == 10 and all(len(v) == 10 for v in categories.values())
    assert len({n.lower() for n in catalog.names}) == 100
    assert len(catalog.sets) == 10
    for members in catalog.sets.values():
        specs = catalog.select(members)
        assert len(specs) == 10 and len({s.category for s in specs}) == 1
    assert sum(1 for spec in catalog if spec.synonyms) >= 50


def test_benchmark_catalog_contents() -> None:
    cifar = load_catalog("cifar10")
    assert cifar.names == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    assert all(2 <= len(spec.synonyms) <= 4 for spec in cifar)
    assert cifar.get("airplane").phrase == "an airplane"
    celebs = load_catalog("celebrities")
    assert len(celebs) == 10 and {s.category for s in celebs} == {"identity"}
    assert celebs.get("brad_pitt").phrase == "Brad Pitt" and celebs.get("Pitt").name == "Brad Pitt"
    assert all(spec.anchor == "a person" for spec in celebs)
    artists = load_catalog("artists")
    assert len(artists.set("artists-only")) == 5 and len(artists.set("styles-only")) == 5
    assert {s.category for s in artists} == {"artist", "style"}
    explicit = load_catalog("explicit")
    assert "nudity" in explicit and {s.category for s in explicit} == {"explicit"}
    assert any(mentions("a naked person on a beach", spec) for spec in explicit)


# ------------------------------------------------------------------------- specs and phrasing


def test_phrase_convention() -> None:
    assert ConceptSpec("airplane").phrase == "an airplane"
    assert ConceptSpec("ukulele").phrase == "a ukulele"
    assert ConceptSpec("hour glass").phrase == "an hour glass"
    assert ConceptSpec("Brad Pitt").phrase == "Brad Pitt"
    assert ConceptSpec("cubism", article=False).phrase == "cubism"
    assert ConceptSpec("Jeep", article=True).phrase == "a Jeep"
    assert ConceptSpec("nudity", synonyms=["a naked person"]).phrases[1] == "a naked person"
    assert ConceptSpec("cat", surrogate="owl").surrogate_phrase == "an owl"
    assert render_prompt("a landscape, {}", "") == "a landscape"
    assert render_prompt("{}, a bridge", "") == "a bridge"
    assert render_prompt("a photo of {}'s face", "a person") == "a photo of a person's face"


def test_spec_helpers_and_round_trip() -> None:
    spec = ConceptSpec("dog", synonyms=["puppy"], templates=["a photo of {}"])
    assert isinstance(spec.synonyms, tuple) and isinstance(spec.templates, tuple)
    assert with_surrogate(spec, "cat").surrogate == "cat" and spec.surrogate is None
    assert with_anchor(spec, "a pet").anchor == "a pet"
    assert ConceptSpec.from_dict(spec.to_dict()) == spec
    assert ConceptSpec.from_dict(with_surrogate(spec, "cat").to_dict()).surrogate == "cat"


def test_mentions_word_level() -> None:
    dog = ConceptSpec("dog", synonyms=["puppy", "a hound"])
    assert mentions("two dogs in a park", dog) and mentions("Puppies!", dog)
    assert mentions("the hound barks", dog)
    assert not mentions("a hotdog stand", dog) and not mentions("dogma", dog)


# ------------------------------------------------------------------------------- catalog lookup


def test_lookup_select_and_sets() -> None:
    catalog = load_catalog("cifar10")
    assert catalog.get("Car").name == "automobile"
    assert [s.name for s in catalog.select(["dog", "DOG", "puppy", "cat"])] == ["dog", "cat"]
    assert [s.name for s in catalog.select("ship")] == ["ship"]
    assert {s.name for s in catalog.set("vehicles")} == {"airplane", "automobile", "ship", "truck"}
    with pytest.raises(ConceptError) as exc:
        catalog.set("vehicels")
    assert "vehicles" in _error(exc)


def test_unknown_concept_suggests_close_matches() -> None:
    with pytest.raises(ConceptError) as exc:
        load_catalog("cifar10").get("airplain")
    message = _error(exc)
    assert "airplain" in message and "cifar10" in message and "did you mean: airplane" in message
    with pytest.raises(ConceptError) as exc:
        load_catalog("mass100").get("xyzzy")
    assert "its concepts: lion" in _error(exc)


def test_unknown_catalog_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(ConceptError) as exc:
        load_catalog("cifar")
    message = _error(exc)
    assert "unknown catalog 'cifar'" in message and all(n in message for n in BUILTINS)
    with pytest.raises(ConceptError) as exc:
        load_catalog(tmp_path / "missing.yaml")
    assert "does not exist" in _error(exc)


# ----------------------------------------------------------------------------- user catalogs


def test_user_catalog_yaml_and_json_load_the_same(tmp_path: Path) -> None:
    data = _user_catalog()
    (tmp_path / "pets.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    (tmp_path / "pets.json").write_text(json.dumps(data), encoding="utf-8")
    from_yaml = load_catalog(tmp_path / "pets.yaml")
    from_json = load_catalog(str(tmp_path / "pets.json"))
    for catalog in (from_yaml, from_json):
        assert isinstance(catalog, Catalog) and catalog.name == "pets"
    assert from_yaml.concepts == from_json.concepts
    assert (from_yaml.retain, from_yaml.sets) == (from_json.retain, from_json.sets)
    hamster, goldfish, parrot, iguana = from_yaml
    assert hamster.synonyms == ("gerbil",) and hamster.surrogate == "teapot"
    assert hamster.anchor == "an animal" and hamster.category == "animal"
    assert goldfish.templates == ("{} in a bowl", "a drawing of {}")
    assert parrot.anchor == "a bird" and iguana.phrase == "an iguana"
    data.pop("name")
    (tmp_path / "zoo.yml").write_text(yaml.safe_dump(data), encoding="utf-8")
    assert load_catalog(tmp_path / "zoo.yml").name == "zoo"


def _mutate(key: str) -> dict[str, Any]:
    data = _user_catalog()
    concepts = data["concepts"]
    if key == "unknown key":
        concepts[0]["synonym"] = ["gerbil"]
    elif key == "bad type":
        concepts[2]["synonyms"] = 5
    elif key == "empty":
        data["concepts"] = []
    elif key == "duplicate":
        concepts.append({"name": "Hamster"})
    elif key == "surrogate":
        concepts[0]["surrogate"] = "gerbil"
    elif key == "template":
        concepts[1]["templates"] = ["a goldfish photo"]
    elif key == "shared term":
        concepts[2]["synonyms"] = ["gerbil"]
    elif key == "set":
        data["sets"]["small"] = ["hamstr"]
    elif key == "no name":
        concepts[1] = {"synonyms": ["koi"]}
    elif key == "top key":
        data["concept"] = data.pop("concepts")
    return data


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("unknown key", ["concept 'hamster'", "unknown key 'synonym'", "synonyms"]),
        ("bad type", ["concept 'parrot'", "'synonyms'"]),
        ("empty", ["catalog 'pets'", "concept list is empty"]),
        ("duplicate", ["duplicate concept 'Hamster'"]),
        ("surrogate", ["concept 'hamster'", "surrogate 'gerbil' is the concept itself"]),
        ("template", ["concept 'goldfish'", "'a goldfish photo'", "{}"]),
        ("shared term", ["'gerbil'", "concept 'parrot'", "concept 'hamster'"]),
        ("set", ["set 'small'", "'hamstr'", "did you mean: hamster"]),
        ("no name", ["has no 'name'"]),
        ("top key", ["unknown key 'concept'", "did you mean: concepts"]),
    ],
)
def test_malformed_catalog_errors_are_one_line(
    tmp_path: Path, key: str, expected: list[str]
) -> None:
    path = tmp_path / "pets.yaml"
    path.write_text(yaml.safe_dump(_mutate(key)), encoding="utf-8")
    with pytest.raises(ConceptError) as exc:
        load_catalog(path)
    message = _error(exc)
    for part in expected:
        assert part in message, message


def test_invalid_file_syntax(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("concepts: [a, b\n  - c", encoding="utf-8")
    (tmp_path / "bad.json").write_text('{"concepts": [', encoding="utf-8")
    for name, kind in (("bad.yaml", "invalid YAML"), ("bad.json", "invalid JSON")):
        with pytest.raises(ConceptError) as exc:
            load_catalog(tmp_path / name)
        assert kind in _error(exc) and name in str(exc.value)


def test_spec_errors() -> None:
    with pytest.raises(ConceptError) as exc:
        ConceptSpec("cat", templates=["a photo of a cat"])
    assert "must contain the placeholder {}" in _error(exc)
    with pytest.raises(ConceptError) as exc:
        with_surrogate(ConceptSpec("cat", synonyms=["kitten"]), "a kitten")
    assert "is the concept itself" in _error(exc)
    with pytest.raises(ConceptError):
        ConceptSpec("cat", synonyms=["Cat"])
    with pytest.raises(ConceptError):
        catalog_from_dict({"concepts": "cat"}, name="x")


# ------------------------------------------------------------------------------- prompt sets


def test_prompt_sets_are_deterministic_per_seed() -> None:
    catalog = load_catalog("cifar10")
    concepts = catalog.select(["cat", "ship"])
    first = build_prompt_sets(concepts, catalog, n_per_concept=12, n_retain=20, seed=3)
    again = build_prompt_sets(concepts, catalog, n_per_concept=12, n_retain=20, seed=3)
    other = build_prompt_sets(concepts, catalog, n_per_concept=12, n_retain=20, seed=4)
    assert first.to_dict() == again.to_dict()
    assert first.target != other.target and first.retain != other.retain
    # A concept's prompts do not depend on which others are erased with it.
    alone = build_prompt_sets(catalog.select(["cat"]), catalog, n_per_concept=12, seed=3)
    assert alone.target == first.target[:12]


def test_prompt_sets_are_aligned() -> None:
    catalog = load_catalog("celebrities")
    concepts = [with_surrogate(catalog.get("Brad Pitt"), "a man"), catalog.get("Taylor Swift")]
    sets = build_prompt_sets(concepts, catalog, n_per_concept=15, n_retain=10, seed=0)
    n = len(sets.target)
    assert n == 30 and len(sets.neutral) == len(sets.surrogate) == len(sets.concept_of) == n
    assert sets.concept_of == [0] * 15 + [1] * 15 and sets.names == ["Brad Pitt", "Taylor Swift"]
    for i in range(n):
        spec = concepts[sets.concept_of[i]]
        phrase = spec.phrase_for(sets.term_of[i])
        assert phrase in sets.target[i]
        assert sets.target[i].replace(phrase, spec.anchor, 1) == sets.neutral[i]
        swap = spec.surrogate_phrase or spec.anchor
        assert sets.target[i].replace(phrase, swap, 1) == sets.surrogate[i]
        assert mentions(sets.target[i], spec) and not mentions(sets.neutral[i], spec)
    assert any(p.startswith("a man") or " a man" in p for p in sets.surrogate[:15])
    assert sets.surrogate[15:] == sets.neutral[15:]  # no surrogate: falls back to the anchor
    assert len(sets.synonyms) == 30 and sets.synonyms_concept_of == [0] * 15 + [1] * 15
    for prompt, index in zip(sets.synonyms, sets.synonyms_concept_of, strict=True):
        spec = concepts[index]
        phrases = [spec.phrase_for(s) for s in spec.synonyms]
        assert prompt in {render_prompt(t, p) for t in spec.templates for p in phrases}


def test_surrogate_list_empty_without_surrogates() -> None:
    catalog = load_catalog("artists")
    sets = build_prompt_sets(catalog.select(["cubism"]), catalog, n_per_concept=5, n_retain=5)
    assert sets.surrogate == [] and not sets.has_surrogate
    assert all("cubis" not in p and p == p.strip(" ,") for p in sets.neutral)


@pytest.mark.parametrize(
    ("catalog_name", "erase"),
    [
        ("cifar10", ["cat"]),
        ("cifar10", ["truck", "automobile"]),
        ("celebrities", ["Emma Watson", "Elon Musk"]),
        ("artists", ["Van Gogh", "pixel art"]),
        ("explicit", ["nudity"]),
        ("mass100", ["oak tree", "bus", "strawberry", "t-shirt", "saw"]),
    ],
)
def test_retain_never_mentions_erased_concepts(catalog_name: str, erase: list[str]) -> None:
    catalog = load_catalog(catalog_name)
    concepts = catalog.select(erase)
    sets = build_prompt_sets(concepts, catalog, n_per_concept=4, n_retain=200, seed=1)
    assert len(sets.retain) == 200
    for prompt in sets.retain:
        for spec in concepts:
            assert not any(_says(prompt, term) for term in spec.terms), (prompt, spec.name)
    others = [spec for spec in catalog if spec not in concepts]
    assert any(mentions(p, spec) for p in sets.retain for spec in others)
    assert set(catalog.retain) & set(sets.retain)


def test_contrast_prompts_put_a_neighbour_in_the_concepts_place() -> None:
    catalog = load_catalog("toy")
    concepts = catalog.select(["diamond", "square", "velmora"])
    sets = build_prompt_sets(concepts, catalog, n_per_concept=16, n_retain=8, seed=2)
    assert len(sets.contrast) == len(sets.target)
    for row, prompt in enumerate(sets.contrast):
        assert prompt, sets.target[row]
        spec = concepts[sets.concept_of[row]]
        template = sets.template_of[row]
        options = [
            render_prompt(template, other.phrase_for(other.name))
            for other in catalog
            if other.category == spec.category and other not in concepts
        ]
        assert prompt in options
        assert not any(mentions(prompt, erased) for erased in concepts)
    for index, spec in enumerate(concepts):  # every neighbour, for training to deal in turn
        same = [o for o in catalog if o.category == spec.category and o not in concepts]
        assert sets.neighbours[index] == [o.phrase_for(o.name) for o in same]
    row = sets.concept_of.index(0)
    assert sets.contrast_with(row, "a circle") == render_prompt(sets.template_of[row], "a circle")
    assert sets.contrast_with(row, "a square") == ""  # square is erased here
    alone = build_prompt_sets(concepts, None, n_per_concept=4, n_retain=8, seed=2)
    assert alone.contrast == [""] * len(alone.target)  # no catalog, no neighbours
    assert alone.neighbours == [[], [], []]
    again = build_prompt_sets(concepts, catalog, n_per_concept=16, n_retain=8, seed=2)
    assert again.contrast == sets.contrast and again.synonyms == sets.synonyms


def test_retain_without_catalog_uses_generic_captions() -> None:
    sets = build_prompt_sets([ConceptSpec("tree")], None, n_per_concept=3, n_retain=5, seed=0)
    assert len(sets.retain) == 5 and set(sets.retain) <= set(GENERIC_RETAIN)
    assert not any(_says(p, "tree") for p in sets.retain)
    assert sets.synonyms == [] and sets.target[0].count("a tree") == 1


def test_build_prompt_sets_errors() -> None:
    with pytest.raises(ConceptError) as exc:
        build_prompt_sets([], None, n_per_concept=2, n_retain=2, seed=0)
    assert "no concepts" in _error(exc)
    with pytest.raises(ConceptError) as exc:
        build_prompt_sets([ConceptSpec("cat"), ConceptSpec("Cat")], None, 2, 2, 0)
    assert "listed twice" in _error(exc)
    with pytest.raises(ConceptError):
        build_prompt_sets([ConceptSpec("cat")], None, n_per_concept=0, n_retain=2, seed=0)


def test_retain_skips_catalog_concepts_sharing_a_term() -> None:
    catalog = load_catalog("cifar10")
    sets = build_prompt_sets([ConceptSpec("car")], catalog, n_per_concept=2, n_retain=100, seed=0)
    automobile = catalog.get("automobile")
    assert not any(mentions(p, automobile) for p in sets.retain)
    assert any(mentions(p, catalog.get("dog")) for p in sets.retain)


def test_empty_anchor_drops_a_dangling_preposition() -> None:
    from fade.concepts import render_prompt

    assert render_prompt("a circle by {}", "") == "a circle"
    assert render_prompt("a house in the style of {}", "") == "a house"
    assert render_prompt("a circle by {}", "velmora") == "a circle by velmora"


def test_neighbour_share_sets_how_many_retain_prompts_are_neighbours() -> None:
    catalog = load_catalog("toy")
    erased = catalog.select(["diamond"])
    neighbour_prompts = {
        render_prompt(template, phrase)
        for spec in catalog
        if spec.category == "object" and spec.name != "diamond"
        for template in spec.templates
        for phrase in spec.phrases
    }

    def share(neighbour_share: float) -> float:
        sets = build_prompt_sets(
            erased, catalog, n_per_concept=2, n_retain=60, seed=0, neighbour_share=neighbour_share
        )
        return sum(p in neighbour_prompts for p in sets.retain) / 60

    # A generic caption can also be a neighbour's prompt ("a red circle"), hence ">=".
    assert share(0.6) >= 0.6 and share(0.6) > share(1 / 3) + 0.15 and share(1 / 3) >= 1 / 3
    default = build_prompt_sets(erased, catalog, n_per_concept=2, n_retain=60, seed=0)
    explicit = build_prompt_sets(
        erased, catalog, n_per_concept=2, n_retain=60, seed=0, neighbour_share=1 / 3
    )
    assert default.retain == explicit.retain


def test_mass_erasure_neutral_prompts_never_name_another_erased_concept() -> None:
    """Preserving "a shape by velmora" (diamond's neutral) would keep velmora, which the same
    run erases; such templates are left out of a concept's rows."""
    catalog = load_catalog("toy")
    erased = catalog.select(["diamond", "heart", "velmora", "okafor", "d"])
    sets = build_prompt_sets(erased, catalog, n_per_concept=16, n_retain=8, seed=0)
    for prompt in (*sets.neutral, *sets.target, *sets.synonyms):
        named = [spec.name for spec in erased if mentions(prompt, spec)]
        assert len(named) <= 1, (prompt, named)
    alone = build_prompt_sets(catalog.select(["diamond"]), catalog, n_per_concept=16, seed=0)
    assert any("velmora" in prompt for prompt in alone.neutral)  # one concept: all templates
