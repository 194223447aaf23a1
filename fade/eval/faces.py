"""Face identity detector: which of the reference people does each image show?

The identity benchmark of erasure papers (celebrities, MACE's H_c) counts an image as showing a
person when a face recogniser matches a face in it to that person. This detector uses dlib
(the ``dlib-bin`` wheel: the compiled library, nothing to build) with the models shipped in the
``face-recognition-models`` package, the pair behind the ``face_recognition`` library:

1. faces are found with dlib's HOG frontal face detector (image upsampled once, as
   face_recognition does by default);
2. each face is aligned with the 5-point landmark model (``shape_predictor_5_face_landmarks``)
   and embedded with ``dlib_face_recognition_resnet_model_v1`` (128-d);
3. a face shows identity k when its nearest reference embedding belongs to k and lies within
   ``threshold`` (Euclidean; 0.6 is face_recognition's and dlib's standard tolerance). Each face
   is one person, so it counts for its nearest identity only.

References are photos per identity: ``eval.face_references`` is a folder with one sub-folder per
concept name (``Brad Pitt/*.jpg``); from each reference photo the largest face is used, and a
photo without a face is an error (it would silently weaken the reference).

The package ``face_recognition_models`` imports ``pkg_resources`` (gone from current
setuptools), so it is not imported: its model files are found with
:func:`importlib.util.find_spec`. No weights are downloaded: everything ships in the two wheels.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from fade.errors import FadeError

#: face_recognition's default tolerance: same person below this embedding distance.
DEFAULT_THRESHOLD = 0.6
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"


def _require_dlib() -> Any:
    from fade.eval.detectors import _require

    return _require("dlib")


def model_file(name: str) -> Path:
    """A model file of the installed face-recognition-models package (not imported)."""
    from fade.eval.detectors import INSTALL_HINT

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FadeError(f"the face detector needs 'face_recognition_models'; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FadeError(f"{path} is missing: reinstall face-recognition-models ({INSTALL_HINT})")
    return path


class FaceIdentityDetector:
    """dlib face detection + 128-d face embeddings, matched against reference identities."""

    name = "face"
    #: Unused: a match is decided by ``threshold`` (an embedding distance), not a probability.
    default_confidence = None

    def __init__(
        self,
        references: Mapping[str, Sequence[Tensor]] | str | Path,
        names: Sequence[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        upsample: int = 1,
    ) -> None:
        dlib = _require_dlib()
        self.finder = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(model_file(LANDMARK_MODEL)))
        self.encoder = dlib.face_recognition_model_v1(str(model_file(RECOGNITION_MODEL)))
        self.threshold, self.upsample = threshold, upsample
        if isinstance(references, str | Path):
            references = load_references(references, names)
        self.identities: list[str] = []
        rows = []
        for identity, images in references.items():
            for index, image in enumerate(images):
                faces = self.embed(image[None])[0]
                if not faces:
                    raise FadeError(
                        f"reference image {index + 1} of {identity!r} shows no face the detector "
                        "can find: use a frontal photo"
                    )
                rows.append(max(faces, key=lambda f: f[1])[0])  # the largest face
                self.identities.append(identity)
        if not rows:
            raise FadeError("the face detector needs at least one reference photo")
        self.references = np.stack(rows)

    def embed(self, images: Tensor) -> list[list[tuple[np.ndarray, int]]]:
        """Per image: (128-d embedding, face area in pixels) for every face found."""
        from fade.eval.detectors import _to_uint8_hwc

        out = []
        for array in _to_uint8_hwc(images):
            array = np.ascontiguousarray(array)
            faces = []
            for box in self.finder(array, self.upsample):
                shape = self.landmarks(array, box)
                vector = np.asarray(self.encoder.compute_face_descriptor(array, shape, 1))
                faces.append((vector, int(box.width() * box.height())))
            out.append(faces)
        return out

    def distances(self, images: Tensor) -> list[np.ndarray]:
        """Per image: (faces, references) embedding distances."""
        return [
            np.linalg.norm(
                np.stack([v for v, _ in faces])[:, None] - self.references[None], axis=-1
            )
            if faces
            else np.zeros((0, len(self.references)))
            for faces in self.embed(images)
        ]

    def found_concepts(self, images: Tensor, confidence: float | None = None) -> list[set[str]]:
        """Identities matched in each image; ``confidence`` is ignored (see ``threshold``)."""
        found = []
        for table in self.distances(images):
            names = set()
            for row in table:
                nearest = int(row.argmin())
                if row[nearest] <= self.threshold:
                    names.add(self.identities[nearest])
            found.append(names)
        return found


def reference_files(folder: str | Path, names: Sequence[str] | None = None) -> dict[str, list]:
    """{identity: image paths} of `folder`/<identity>/*; with `names`, exactly those identities
    (each must have a sub-folder with images), else every sub-folder. Reads no image, so it
    can check a run's references before any model loads."""
    from fade.eval.imagefiles import image_files

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FadeError(f"face reference folder {root} (eval.face_references) does not exist")
    wanted = list(names) if names is not None else sorted(p.name for p in root.iterdir())
    missing = [n for n in wanted if not (root / n).is_dir()]
    if missing:
        raise FadeError(
            f"face reference folder {root} has no sub-folder for {', '.join(map(repr, missing))}: "
            "put photos of each identity in <folder>/<concept name>/"
        )
    return {n: image_files(root / n, f"face references of {n!r}") for n in wanted}


def load_references(folder: str | Path, names: Sequence[str] | None = None) -> dict[str, list]:
    """{identity: images (3, H, W) in [0, 1]} of `folder` (see :func:`reference_files`)."""
    from fade.eval.imagefiles import load_image

    files = reference_files(folder, names)
    return {name: [load_image(path) for path in paths] for name, paths in files.items()}
