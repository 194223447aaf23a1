"""Evaluation inputs: the prompt groups of a run, prompt adherence, the surrogate's rate."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fade.config import load_config
from fade.eval.erasure import build_eval_sets, detection_rate, prompt_adherence
from fade.plan import make_plan
from fade.toyworld.captions import caption_for, sample_scene
from fade.toyworld.data import render_scenes
from fade.toyworld.detector import ToyDetector, images_to_unit
from fade.toyworld.vocabulary import prompt_attributes


@pytest.mark.parametrize(
    ("prompt", "attributes"),
    [
        ("a crimson striped circle by velmora", {"red", "striped", "circle", "velmora"}),
        ("a red shape", {"red"}),
        ("the letter k", {"k"}),
        ("the letter", set()),
        ("a disc", {"circle"}),
    ],
)
def test_prompt_attributes_are_canonical_concepts(prompt: str, attributes: set[str]) -> None:
    assert prompt_attributes(prompt) == attributes


@pytest.fixture(scope="module")
def renders():
    rng = np.random.default_rng(5)
    scenes = [sample_scene(rng) for _ in range(48)]
    captions = [caption_for(scene, rng) for scene in scenes]
    return images_to_unit(render_scenes(scenes)), captions


def test_adherence_is_high_for_true_captions_and_low_for_wrong_ones(renders) -> None:
    images, captions = renders
    detector = ToyDetector.load()
    true_rate = prompt_adherence(detector, images, captions, 0.9)
    wrong = captions[1:] + captions[:1]  # every image with another image's caption
    wrong_rate = prompt_adherence(detector, images, wrong, 0.9)
    assert true_rate >= 95.0, true_rate
    assert wrong_rate <= 40.0, wrong_rate


def test_adherence_skips_prompts_that_ask_for_nothing(renders) -> None:
    images = renders[0]
    detector = ToyDetector.load()
    assert np.isnan(prompt_adherence(detector, images[:2], ["the letter", "a shape"], 0.9))


def test_eval_sets_carry_the_surrogate_and_enough_neutral_images() -> None:
    plan = make_plan(load_config(overrides=["concepts.names=circle", "concepts.surrogate=square"]))
    sets = build_eval_sets(plan, per_set=16, neutral_count=40)
    assert sets.surrogates == ["square"] * len(sets.target.prompts)
    assert len(sets.neutral) == 40 and all("circle" not in p for p in sets.neutral)
    plain = build_eval_sets(make_plan(load_config(overrides=["concepts.names=circle"])))
    assert plain.surrogates == []


def test_detection_rate_counts_the_asked_concept() -> None:
    rng = np.random.default_rng(1)
    circles = [sample_scene(rng, "shape") for _ in range(8)]
    circles = [replace(scene, shape="circle", artist=None) for scene in circles]
    pictures = images_to_unit(render_scenes(circles))
    detector = ToyDetector.load()
    assert detection_rate(detector, pictures, ["circle"] * 8, 0.9) == 100.0
    assert detection_rate(detector, pictures, ["square"] * 8, 0.9) == 0.0


def test_mass_erasure_measures_every_concept_and_every_category() -> None:
    names = "circle,square,red,blue,velmora,okafor"
    plan = make_plan(load_config(overrides=[f"concepts.names=[{names}]"]))
    sets = build_eval_sets(plan, per_set=32)
    assert set(sets.target.concepts) == set(names.split(","))
    assert all(sets.target.concepts.count(c) == 16 for c in names.split(","))
    retained_categories = {c for c in sets.retained_names if c in {"triangle", "orange", "tanaka"}}
    assert retained_categories == {"triangle", "orange", "tanaka"}
    assert not set(sets.retained_names) & set(names.split(","))
    # Each neighbour gets its own 32 images, however many neighbours share the run: fewer
    # cannot resolve the 5-point specificity bound (one image of 8 is 12.5 points).
    assert all(sets.retained.concepts.count(c) == 32 for c in sets.retained_names)


def test_images_per_concept_beyond_the_plans_prompts_cycles_them() -> None:
    """Asking for more target images than the plan has prompts measures that many (each with
    its own seed): it used to stop at the plan's 32 and report 32 as if it were 288."""
    plan = make_plan(load_config(overrides=["concepts.names=[circle,square]"]))
    available = plan.prompts.concept_of.count(0)
    sets = build_eval_sets(plan, per_concept=available * 2 + 1)
    for index, name in enumerate(plan.prompts.names):
        pairs = zip(plan.prompts.target, plan.prompts.concept_of, strict=True)
        own = [prompt for prompt, of in pairs if of == index]
        taken = [
            p for p, c in zip(sets.target.prompts, sets.target.concepts, strict=True) if c == name
        ]
        assert taken == (own * 3)[: available * 2 + 1]
        assert sets.synonyms.concepts.count(name) == available * 2 + 1
    fewer = build_eval_sets(plan, per_concept=4)
    assert fewer.target.concepts == ["circle"] * 4 + ["square"] * 4


def _retained_prompts(sets, name: str) -> list[str]:
    pairs = zip(sets.retained.prompts, sets.retained.concepts, strict=True)
    return [prompt for prompt, concept in pairs if concept == name]


def test_a_neighbours_prompts_leave_out_those_that_name_an_erased_concept() -> None:
    """The prompt "a circle by velmora" is velmora's when velmora is erased, not the circle's; with
    velmora kept it measures the circle like any other template."""
    alone = build_eval_sets(make_plan(load_config(overrides=["concepts.names=diamond"])))
    assert "a circle by velmora" in _retained_prompts(alone, "circle")
    names = "[diamond,velmora]"
    both = build_eval_sets(make_plan(load_config(overrides=[f"concepts.names={names}"])))
    circle = _retained_prompts(both, "circle")
    assert len(circle) == 32 and "a circle by tanaka" in circle
    assert not any("velmora" in prompt for prompt in both.retained.prompts)
    # Every template of an artist names an erased shape or letter here: all are kept.
    every = "[circle,cross,square,heart,k,e,velmora]"
    kept = build_eval_sets(make_plan(load_config(overrides=[f"concepts.names={every}"])))
    artist = next(n for n in kept.retained_names if n in {"okafor", "tanaka", "brandt"})
    assert len(set(_retained_prompts(kept, artist))) == 6


def test_eval_retained_measures_the_named_concepts_instead() -> None:
    """`eval.retained` names the retained concepts to measure, of any category, each on
    `images_per_neighbour` images of prompts that name no erased concept."""
    from fade.concepts import ConceptError
    from fade.eval.evaluate import eval_sets

    cfg = load_config(
        overrides=[
            "concepts.names=[diamond,velmora]",
            "eval.retained=[triangle,Crimson,tanaka]",  # a synonym finds its concept
            "eval.images_per_neighbour=12",
        ]
    )
    plan = make_plan(cfg)
    sets = eval_sets(plan.config, plan)
    assert sets.retained_names == ["triangle", "red", "tanaka"]
    assert all(sets.retained.concepts.count(c) == 12 for c in sets.retained_names)
    assert not any("velmora" in p or "diamond" in p for p in sets.retained.prompts)
    with pytest.raises(
        ConceptError, match=r"eval\.retained names 'diamond', which this run erases"
    ):
        build_eval_sets(plan, retained_names=["circle", "diamond"])
    with pytest.raises(ConceptError, match=r"unknown concept 'triangel'.*triangle"):
        build_eval_sets(plan, retained_names=["triangel"])
