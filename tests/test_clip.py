"""CLIP score and the CLIP zero-shot detector load a CLIP from a local folder and give
well-formed numbers.

No CLIP weights are reachable from here (DESIGN.md section 6), so the CLIP is a tiny CLIPModel
with seeded random weights built from a config (tests/tiny.py): the code path is the one a hub
or local CLIP folder takes, but the numbers mean nothing, so only their form is checked
(ranges, shapes, determinism, the softmax threshold), never their meaning.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fade.config import load_config
from fade.errors import FadeError
from fade.eval.clip import Clip, ClipDetector
from fade.eval.detectors import load_detector
from fade.eval.evaluate import check_detector
from fade.eval.measuring import clip_classes, resolve
from fade.plan import make_plan
from tests.tiny import tiny_clip_folder

REAL_MODEL = ["model.path=/some/sd-model"]  # never loaded: plans and checks only


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tiny_clip_folder(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> Clip:
    return Clip(str(clip_dir), local_files_only=True)


def _images(count: int, size: int = 40) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_clip_score_is_a_clipped_cosine_times_100(clip: Clip) -> None:
    images = _images(4)
    prompts = ["a photo of a cat", "a dog", "a photo of a cat", "x"]
    scores = clip.score(images, prompts)
    assert len(scores) == 4 and all(0.0 <= s <= 100.0 for s in scores)
    assert clip.score(images, prompts) == scores  # deterministic
    image_e, text_e = clip.image_embeddings(images), clip.text_embeddings(prompts)
    assert torch.allclose(image_e.norm(dim=-1), torch.ones(4), atol=1e-5)
    cosine = (image_e * text_e).sum(-1)
    assert scores == pytest.approx((100 * cosine.clamp(min=0)).tolist(), abs=1e-4)
    # One image scored alone is the same number as in a batch.
    assert clip.score(images[1:2], prompts[1:2])[0] == pytest.approx(scores[1], abs=1e-4)
    with pytest.raises(ValueError, match="4 images but 1 prompts"):
        clip.score(images, ["a cat"])


def test_zero_shot_detector_counts_a_concept_at_its_softmax_probability(clip: Clip) -> None:
    classes = {"cat": "a photo of a cat", "dog": "a photo of a dog"}
    detector = load_detector("clip", clip=clip, classes=classes, background=["a photo"])
    assert isinstance(detector, ClipDetector) and detector.name == "clip"
    assert detector.texts == ["a photo of a cat", "a photo of a dog", "a photo"]
    images = _images(5)
    probs = clip.probabilities(images, detector.texts)
    assert probs.shape == (5, 3) and torch.allclose(probs.sum(-1), torch.ones(5), atol=1e-5)
    for confidence in (1e-6, 0.3, 0.5, 0.999999):
        expected = [
            {name for name, p in zip(classes, row[:2], strict=True) if p >= confidence}
            for row in probs.tolist()
        ]
        assert detector.found_concepts(images, confidence) == expected
    assert detector.found_concepts(images, 1e-6) == [{"cat", "dog"}] * 5  # never "background"


def test_clip_classes_come_from_the_catalog_templates() -> None:
    cfg = load_config(overrides=["concepts.catalog=cifar10", "concepts.names=cat", *REAL_MODEL])
    classes, background = clip_classes(make_plan(cfg), ["dog", "frog"])
    assert classes == {
        "cat": "a photo of a cat",
        "dog": "a photo of a dog",
        "frog": "a photo of a frog",
    }
    assert background == ["a photo of an object"]
    cfg = load_config(
        overrides=["concepts.catalog=artists", "concepts.names=[Van Gogh]", *REAL_MODEL]
    )
    classes, background = clip_classes(make_plan(cfg), [])
    assert classes == {"Van Gogh": "a painting of a house by Van Gogh"}
    assert background == ["a painting of a house by an artist"]


def test_a_clip_that_cannot_load_is_one_line_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-clip"
    empty.mkdir()
    with pytest.raises(FadeError) as info:
        Clip(str(empty), local_files_only=True)
    message = str(info.value)
    assert message.startswith(f"cannot load CLIP model {empty} (eval.clip_model)")
    assert "\n" not in message
    with pytest.raises(FadeError, match="cannot load CLIP model no-such/clip-model"):
        Clip("no-such/clip-model", local_files_only=True)  # a hub id, offline


def test_clip_settings_are_checked_before_anything_loads(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    real = [*REAL_MODEL, "concepts.catalog=cifar10", "concepts.names=cat"]
    with pytest.raises(FadeError, match=f"CLIP model folder {missing} .* does not exist"):
        resolve(load_config(overrides=[*real, f"eval.clip_model={missing}"]))
    with pytest.raises(FadeError, match=r"eval\.clip_model is for real models"):
        resolve(load_config(overrides=[f"eval.clip_model={tmp_path}"]))
    choices = resolve(
        load_config(overrides=[*real, "eval.clip_model=openai/clip-vit-base-patch32"])
    )
    assert choices.clip == "openai/clip-vit-base-patch32" and choices.alignment_missing is None
    choices = resolve(load_config(overrides=real))
    assert choices.clip is None and "set eval.clip_model" in choices.alignment_missing
    cfg = load_config(overrides=[*real, "eval.detector=clip"])
    with pytest.raises(FadeError, match=r"needs CLIP weights: set eval\.clip_model"):
        check_detector(cfg, make_plan(cfg), ["dog"])
    cfg = load_config(overrides=[*real, "eval.detector=clip", f"eval.clip_model={tmp_path}"])
    check_detector(cfg, make_plan(cfg), ["dog", "any concept at all"])  # open vocabulary
