"""The committed toy model and detector load offline and still know their concepts.

A small version of the build's quality gate (docs/toyworld.md): if the committed weights break,
or the pipeline no longer loads them the standard way, CI fails here.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxPipeline

from fade.backbones import load_backbone
from fade.backbones.loading import TOY_MODEL_DIR
from fade.toyworld.check import concept_rate
from fade.toyworld.detector import ToyDetector, evaluate_detector
from fade.toyworld.spec import IMAGE_SIZE, MAX_TOKENS


@pytest.fixture(scope="module")
def toy():
    backbone = load_backbone("toy", device="cpu")
    backbone.pipeline.set_progress_bar_config(disable=True)
    return backbone


@pytest.fixture(scope="module")
def detector() -> ToyDetector:
    return ToyDetector.load()


def test_detector_is_accurate_on_fresh_renders(detector: ToyDetector) -> None:
    report = evaluate_detector(detector, count=600, seed=777)
    for category, accuracy in report["accuracy"].items():
        assert accuracy >= 95.0, (category, accuracy)
    for category, rate in report["max_false_positive"].items():
        assert rate <= 3.0, (category, rate)


@pytest.mark.parametrize(
    ("concept", "word"),
    [
        ("square", None),
        ("h", None),
        ("red", None),
        ("red", "crimson"),
        ("dotted", None),
        ("velmora", None),
    ],
)
def test_toy_model_shows_its_concepts(toy, detector, concept: str, word: str | None) -> None:
    """Concepts the committed model knows well (docs/toyworld.md has every concept's rate)."""
    result = concept_rate(toy, detector, concept, word, count=16, num_steps=20)
    assert result.rate >= 75.0, result  # 12 of 16
    hits, totals = zip(*result.by_caption.values(), strict=True)
    assert sum(totals) == 16 and 100.0 * sum(hits) / 16 == result.rate, result
    assert sum(result.calls.values()) == 16 and result.calls.get(concept, 0) == sum(hits), result


def test_standard_pipeline_loads_the_toy_folder_offline() -> None:
    pipe = FluxPipeline.from_pretrained(TOY_MODEL_DIR, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(
        ["a red circle", "the letter k"],
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        num_inference_steps=4,
        max_sequence_length=MAX_TOKENS,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_the_concept_sheet_has_a_labelled_row_per_concept(toy, tmp_path) -> None:
    from PIL import Image

    from fade.eval.grids import LABEL_WIDTH
    from fade.toyworld.sheet import concept_sheet
    from fade.toyworld.vocabulary import concept_count

    path = concept_sheet(toy, tmp_path / "sheet.png", per_concept=2, num_steps=2)
    width, height = Image.open(path).size
    scale, gap = 2, 2  # labelled_grid's defaults
    cell = IMAGE_SIZE * scale + gap
    assert (width, height) == (LABEL_WIDTH + 2 * cell, concept_count() * cell)


def test_the_knowledge_report_covers_every_concept_and_synonym(toy, detector) -> None:
    """The build's quality gate, at one image a prompt: its shape, not its numbers."""
    from fade.toyworld.catalog import TEMPLATES
    from fade.toyworld.check import knowledge_report
    from fade.toyworld.vocabulary import CATEGORIES, SYNONYMS

    report = knowledge_report(toy, detector, count=1, num_steps=2)
    assert set(report["per_concept"]) == {c for names in CATEGORIES.values() for c in names}
    assert {word: row["concept"] for word, row in report["synonyms"].items()} == {
        synonym: concept for concept, words in SYNONYMS.items() for synonym in words
    }
    assert set(report["category_mean"]) == set(CATEGORIES)
    assert set(report["calls"]) == set(report["per_concept"])
    # The first templates name no artist; an artist's captions all do.
    assert set(report["per_concept_without_artists"]) == set(report["per_concept"]) - set(
        CATEGORIES["artist"]
    )
    assert report["per_concept_without_artists"] == {
        c: r for c, r in report["per_concept"].items() if c not in CATEGORIES["artist"]
    }
    assert all(sum(calls.values()) == 1 for calls in report["calls"].values())
    # One image a prompt: each concept's image uses the category's first template.
    assert {c: list(by) for c, by in report["per_caption"].items()} == {
        category: [TEMPLATES[category][0]] for category in CATEGORIES
    }
    assert all(0.0 <= rate <= 100.0 for rate in report["per_concept"].values())


def test_the_rate_without_artists_leaves_out_the_artist_captions() -> None:
    from fade.toyworld.check import ConceptRate, rate_without_artists

    by_caption = {"a {}": (3, 4), "a red {}": (4, 4), "a {} by velmora": (0, 4)}
    assert rate_without_artists(ConceptRate("circle", "shape", "circle", 0, by_caption)) == 87.5
    only_artists = {"a circle by {}": (4, 4)}
    assert rate_without_artists(ConceptRate("tanaka", "artist", "tanaka", 0, only_artists)) is None
