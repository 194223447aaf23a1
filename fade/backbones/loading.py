"""Load a backbone from a hub id, a local diffusers folder, or the embedded toy world.

Why a module of its own: every entry point (erase, evaluate, tune, serve) resolves a model the
same way, with the same errors. Hub loading is the real `DiffusionPipeline.from_pretrained`
path (revision, dtype, `local_files_only`); on this project's CI it is exercised with local
folders only.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from fade.backbones.base import Backbone
from fade.backbones.flux import FluxBackbone
from fade.backbones.sd import SDBackbone
from fade.errors import FadeError

BACKBONES: dict[str, type[Backbone]] = {"flux": FluxBackbone, "sd": SDBackbone}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOY_MODEL_ID = "toy"
TOY_MODEL_DIR = Path(__file__).resolve().parent.parent / "toyworld" / "model"


class ModelLoadError(FadeError):
    """The model could not be found or is not a supported pipeline."""


def resolve_model_path(path: str) -> str:
    """ "toy" -> the committed toy pipeline folder; anything else is returned unchanged."""
    if path != TOY_MODEL_ID:
        return path
    if not (TOY_MODEL_DIR / "model_index.json").is_file():
        raise ModelLoadError(
            f"the toy model is not built at {TOY_MODEL_DIR}: run `python jobs/build_toyworld.py`"
        )
    return str(TOY_MODEL_DIR)


def family_of_class(class_name: str) -> str:
    """Map a diffusers pipeline class name (model_index.json's _class_name) to a family."""
    if class_name.startswith("Flux"):
        return "flux"
    if (
        class_name.startswith("StableDiffusion")
        and "XL" not in class_name
        and "3" not in class_name
    ):
        return "sd"
    raise ModelLoadError(
        f"unsupported pipeline class {class_name!r}: "
        "FADE supports FLUX.1 and Stable Diffusion 1.x/2.x"
    )


def detect_family(path: str, revision: str | None = None, local_files_only: bool = False) -> str:
    """Read model_index.json (locally, or just that file from the hub) to pick the backbone."""
    local = Path(path)
    if local.exists():
        index = local / "model_index.json"
        if not index.is_file():
            raise ModelLoadError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
        return family_of_class(json.loads(index.read_text())["_class_name"])
    try:
        config = DiffusionPipeline.load_config(
            path, revision=revision, local_files_only=local_files_only
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot find model {path!r}: {str(error).splitlines()[0]}") from error
    return family_of_class(config["_class_name"])


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("model.device=cuda but no CUDA device is visible")
    return torch.device(device)


def load_backbone(
    path: str = TOY_MODEL_ID,
    family: str = "auto",
    revision: str | None = None,
    dtype: str = "float32",
    device: str = "auto",
    local_files_only: bool = False,
) -> Backbone:
    """Load a pipeline and wrap it in the backbone of its family."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    resolved = resolve_model_path(path)
    if path == TOY_MODEL_ID:
        local_files_only = True
    chosen = family if family != "auto" else detect_family(resolved, revision, local_files_only)
    if chosen not in BACKBONES:
        raise ModelLoadError(f"model family {chosen!r} is not one of {sorted(BACKBONES)}")
    extra = {"safety_checker": None, "requires_safety_checker": False} if chosen == "sd" else {}
    try:
        pipeline = DiffusionPipeline.from_pretrained(
            resolved,
            revision=revision,
            dtype=DTYPES[dtype],
            local_files_only=local_files_only,
            **extra,
        )
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load model {path!r}: {str(error).splitlines()[0]}") from error
    pipeline.set_progress_bar_config(disable=True)
    pipeline.to(pick_device(device))
    return BACKBONES[chosen](pipeline, model_id=path, revision=revision)


def wrap_pipeline(pipeline: DiffusionPipeline, model_id: str = "") -> Backbone:
    """Wrap an already-built pipeline (tests, the toy-world builder) in its backbone."""
    return BACKBONES[family_of_class(type(pipeline).__name__)](pipeline, model_id=model_id)
