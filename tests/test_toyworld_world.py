"""The toy world's definition: vocabulary, renders, captions, labels, catalog, tokenizers."""

from __future__ import annotations

import numpy as np
import pytest

from fade.backbones.tokenizers import build_clip_tokenizer, build_t5_tokenizer
from fade.catalog import load_catalog
from fade.toyworld.captions import caption_for, labels_for, sample_negative, sample_scene
from fade.toyworld.catalog import toy_catalog_yaml
from fade.toyworld.render import Scene, render
from fade.toyworld.vocabulary import (
    CATALOG_CATEGORY,
    CATEGORIES,
    SYNONYMS,
    concept_count,
    vocabulary,
)


def test_world_has_enough_concepts_and_synonyms() -> None:
    assert concept_count() >= 60
    assert len(CATEGORIES) >= 4
    assert len(SYNONYMS) >= 10
    words = vocabulary()
    assert len(words) == len(set(words)), "a word must mean one thing"


def test_every_concept_renders_distinctly() -> None:
    renders = {}
    for category, names in CATEGORIES.items():
        for name in names:
            if category == "shape":
                scene = Scene("shape", shape=name, colour="white", texture="solid")
            elif category == "glyph":
                scene = Scene("glyph", glyph=name, colour="white", texture="solid")
            elif category == "colour":
                scene = Scene("shape", shape="diamond", colour=name, texture="striped")
            elif category == "texture":
                scene = Scene("shape", shape="heart", colour="cyan", texture=name)
            else:
                scene = Scene("shape", shape="circle", colour="white", texture="solid", artist=name)
            image = render(scene)
            assert image.shape == (32, 32, 3) and image.dtype == np.uint8
            renders[(category, name)] = image.tobytes()
    assert len(set(renders.values())) == len(renders)


def test_rendering_is_deterministic() -> None:
    a = [render(sample_scene(np.random.default_rng(3))) for _ in range(2)]
    b = [render(sample_negative(np.random.default_rng(4))) for _ in range(2)]
    assert np.array_equal(a[0], a[1]) and np.array_equal(b[0], b[1])


@pytest.mark.parametrize("seed", range(5))
def test_captions_are_true_of_their_scene(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        scene = sample_scene(rng)
        words = caption_for(scene, rng).split()
        labels = labels_for(scene)
        for word in words:
            for category, names in CATEGORIES.items():
                canonical = next((n for n, syns in SYNONYMS.items() if word in syns), word)
                if canonical in names:
                    assert labels[category] == names.index(canonical), (scene, words)


def test_negatives_show_no_figure() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        labels = labels_for(sample_negative(rng))
        assert labels["shape"] == len(CATEGORIES["shape"])
        assert labels["glyph"] == len(CATEGORIES["glyph"])


def test_committed_catalog_matches_the_vocabulary() -> None:
    from pathlib import Path

    committed = Path(__file__).resolve().parent.parent / "fade" / "catalogs" / "toy.yaml"
    assert committed.read_text() == toy_catalog_yaml(), "regenerate fade/catalogs/toy.yaml"
    catalog = load_catalog("toy")
    assert len(catalog) == concept_count()
    assert catalog.get("disc").name == "circle"
    assert set(catalog.categories) == set(CATALOG_CATEGORY.values())


def test_every_word_is_one_token() -> None:
    words = vocabulary()
    clip, t5 = build_clip_tokenizer(words), build_t5_tokenizer(words)
    for word in words:
        assert len(clip(word).input_ids) == 3, word  # <|startoftext|> word <|endoftext|>
        assert len(t5(word).input_ids) == 2, word  # word </s>
    assert t5("The Letter K").input_ids == t5("the letter k").input_ids


def test_scene_sets_follow_their_figure_weights() -> None:
    from fade.toyworld.data import make_scene_set

    letters_only = make_scene_set(40, seed=1, figure_weights=(0.0, 1.0, 0.0))
    assert {scene.figure for scene in letters_only.scenes} == {"glyph"}
    assert not any(scene.artist for scene in letters_only.scenes)
    default = make_scene_set(200, seed=1)
    assert {scene.figure for scene in default.scenes} == {"shape", "glyph"}
    assert any(scene.artist for scene in default.scenes)


def test_the_refine_phase_continues_the_first_with_its_own_recipe() -> None:
    from fade.toyworld.spec import ToyBuildConfig

    config = ToyBuildConfig()
    assert config.model.final_lr_fraction == 0.1  # the committed first phase's schedule
    assert config.refine.sigma_location > config.model.sigma_location
    shape, glyph, artist = config.refine.figure_weights
    assert abs(shape + glyph + artist - 1.0) < 1e-9 and glyph > config.model.figure_weights[1]


def test_each_later_phase_decays_from_a_lower_peak_than_the_one_before() -> None:
    from fade.toyworld.spec import ToyBuildConfig

    config = ToyBuildConfig()
    phases = [config.model, config.refine, config.polish]
    assert [p.lr for p in phases] == sorted((p.lr for p in phases), reverse=True)
    for phase in phases[1:]:
        assert abs(sum(phase.figure_weights) - 1.0) < 1e-9 and phase.final_lr_fraction <= 0.1
    shapes = [phase.figure_weights[0] for phase in phases]
    assert shapes == sorted(shapes) and shapes[-1] > 0.5  # shapes lagged the others longest
