"""The face identity detector (dlib-bin + face-recognition-models) finds and matches faces on
real photos, offline.

Photos come from scikit-image's wheel: astronaut.png is a portrait of Eileen Collins (its
mission patch also fools the HOG detector: a second, weak "face"), coffee.png shows no face,
and lfw_subset.npy holds 25x25 grey crops of Labeled Faces in the Wild: the first, upscaled,
is a different person's face.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fade.config import load_config
from fade.errors import FadeError
from fade.eval.detectors import load_detector
from fade.eval.evaluate import check_detector
from fade.eval.faces import DEFAULT_THRESHOLD, FaceIdentityDetector, load_references, model_file
from fade.plan import make_plan

pytest.importorskip("dlib")


def _data(name: str) -> Path:
    return Path(
        str(importlib.metadata.distribution("scikit-image").locate_file(f"skimage/data/{name}"))
    )


def _photo(name: str) -> torch.Tensor:
    pixels = np.asarray(Image.open(_data(name)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)


def _other_face() -> torch.Tensor:
    """LFW face 0 (not Eileen Collins), 25 px upscaled to 200 px so dlib's HOG can find it."""
    grey = (np.load(_data("lfw_subset.npy"))[0] * 255).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(grey).resize((200, 200), Image.BICUBIC).convert("RGB"))
    return torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)


@pytest.fixture(scope="module")
def detector() -> FaceIdentityDetector:
    astronaut = _photo("astronaut.png")
    # The reference is the photo mirrored, so the match is not a pixel-identical copy.
    return FaceIdentityDetector({"Eileen Collins": [astronaut.flip(-1)]})


def test_models_come_from_the_wheel_without_importing_it() -> None:
    path = model_file("dlib_face_recognition_resnet_model_v1.dat")
    assert path.is_file() and "face_recognition_models" in str(path)
    assert "face_recognition_models" not in sys.modules  # it imports the removed pkg_resources


def test_the_astronaut_is_found_and_matched(detector: FaceIdentityDetector) -> None:
    astronaut = _photo("astronaut.png")[None]
    (faces,) = detector.embed(astronaut)
    assert faces and all(vector.shape == (128,) for vector, _ in faces)
    (table,) = detector.distances(astronaut)
    assert table.min() < 0.3  # the same face, mirrored: well inside 0.6
    assert detector.found_concepts(astronaut) == [{"Eileen Collins"}]
    # A 256 px copy (what a generated image may look like) still matches.
    small = torch.nn.functional.interpolate(astronaut, size=(256, 256), mode="area")
    assert detector.found_concepts(small) == [{"Eileen Collins"}]


def test_another_face_is_found_but_not_matched(detector: FaceIdentityDetector) -> None:
    other = _other_face()[None]
    (faces,) = detector.embed(other)
    assert len(faces) == 1
    (table,) = detector.distances(other)
    assert table.min() > DEFAULT_THRESHOLD
    assert detector.found_concepts(other) == [set()]


def test_no_face_in_coffee_noise_or_flat(detector: FaceIdentityDetector) -> None:
    coffee = _photo("coffee.png")[None]
    assert detector.embed(coffee) == [[]]
    assert detector.found_concepts(coffee) == [set()]
    blank = torch.cat([torch.rand(1, 3, 64, 64), torch.full((1, 3, 64, 64), 0.5)])
    assert detector.found_concepts(blank) == [set(), set()]


def test_each_face_counts_for_its_nearest_identity_only() -> None:
    astronaut, other = _photo("astronaut.png"), _other_face()
    two = FaceIdentityDetector({"Eileen Collins": [astronaut], "someone": [other]})
    assert two.found_concepts(astronaut[None]) == [{"Eileen Collins"}]
    assert two.found_concepts(other[None]) == [{"someone"}]
    strict = FaceIdentityDetector({"Eileen Collins": [astronaut.flip(-1)]}, threshold=0.01)
    assert strict.found_concepts(astronaut[None]) == [set()]


def _save(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)


def test_references_come_from_a_folder_per_identity(tmp_path: Path) -> None:
    _save(_photo("astronaut.png"), tmp_path / "Eileen Collins" / "1.png")
    _save(_other_face(), tmp_path / "someone" / "a.png")
    assert sorted(load_references(tmp_path)) == ["Eileen Collins", "someone"]
    detector = load_detector("face", references=tmp_path, names=["Eileen Collins"])
    assert detector.name == "face" and detector.identities == ["Eileen Collins"]
    assert detector.found_concepts(_photo("astronaut.png")[None]) == [{"Eileen Collins"}]
    with pytest.raises(FadeError, match="has no sub-folder for 'Brad Pitt'"):
        load_detector("face", references=tmp_path, names=["Eileen Collins", "Brad Pitt"])
    _save(_photo("coffee.png"), tmp_path / "cup" / "coffee.png")
    with pytest.raises(FadeError, match="reference image 1 of 'cup' shows no face"):
        load_detector("face", references=tmp_path, names=["cup"])


def test_the_face_detector_needs_references_for_every_concept(tmp_path: Path) -> None:
    overrides = [
        "model.path=/some/sd-model",  # never loaded: the checks run before any model loads
        "concepts.catalog=celebrities",
        "concepts.names=[Brad Pitt]",
        "eval.detector=face",
    ]
    plan = make_plan(load_config(overrides=overrides))
    with pytest.raises(FadeError, match=r"needs reference photos: set eval\.face_references"):
        check_detector(plan.config, plan, ["Tom Hanks"])
    (tmp_path / "Brad Pitt").mkdir()
    _save(_photo("astronaut.png"), tmp_path / "Brad Pitt" / "1.png")
    cfg = load_config(overrides=[*overrides, f"eval.face_references={tmp_path}"])
    check_detector(cfg, plan, [])
    with pytest.raises(FadeError, match="no sub-folder for 'Tom Hanks'"):
        check_detector(cfg, plan, ["Tom Hanks"])
