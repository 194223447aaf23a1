"""Erasure checkpoints: what a resumed or restarted run continues from.

A checkpoint folder holds `state.pt` (whole adapter weights and AdamW moments by parameter
name, the discriminator and its optimizer, the loop's position and log; torch.save of plain
tensors and numbers, loaded with weights_only), `saliency.json` (the module selection, so a
resumed run attaches LoRA to exactly the same modules) and `progress.json` (the step and the
settings' fingerprint). Every strategy gathers its shards into that form before rank 0 writes
it (fade/distributed/strategies.py), so a checkpoint resumes on any worker count and strategy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from fade.config import FadeConfig, config_to_dict
from fade.errors import FadeError
from fade.saliency import SaliencySelection

STATE_FILE = "state.pt"
SELECTION_FILE = "saliency.json"
PROGRESS_FILE = "progress.json"
#: Sections that do not change what training computes: a checkpoint resumes across them.
_NOT_TRAINING = ("distributed", "output", "eval", "tune", "serve")
#: Bumped when state.pt's layout changes: older checkpoints are then refused as another run's.
FORMAT = 2


def fingerprint(cfg: FadeConfig) -> str:
    """Hash of the settings that shape training (the worker count is not one of them; the
    image size, which lives with the evaluation's settings, is)."""
    data = {k: v for k, v in config_to_dict(cfg).items() if k not in _NOT_TRAINING}
    data["size"] = [cfg.eval.height, cfg.eval.width]
    data["checkpoint_format"] = FORMAT
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def write_checkpoint(
    directory: Path, state: dict, selection: SaliencySelection, cfg: FadeConfig
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / STATE_FILE)
    (directory / SELECTION_FILE).write_text(json.dumps(selection.to_dict(), indent=2))
    progress = {"steps_run": state["steps_run"], "fingerprint": fingerprint(cfg)}
    (directory / PROGRESS_FILE).write_text(json.dumps(progress))
    return directory


def read_checkpoint(directory: Path) -> tuple[SaliencySelection, dict, dict]:
    """(selection, state, progress) of a checkpoint folder."""
    selection = SaliencySelection.from_dict(json.loads((directory / SELECTION_FILE).read_text()))
    # On CPU first: a GPU run's checkpoint may resume on CPU, and each rank moves its copy to
    # its own device as the state is loaded into the modules and optimizers.
    state = torch.load(directory / STATE_FILE, weights_only=True, map_location="cpu")
    progress = json.loads((directory / PROGRESS_FILE).read_text())
    return selection, state, progress


def latest_progress(storage: str, name: str) -> tuple[str, dict] | None:
    """The newest checkpoint's location and progress under Ray Train's run folder
    `storage/name` (a local folder or a pyarrow filesystem URI such as s3://), if any."""
    import pyarrow.fs as pafs

    try:
        filesystem, root = pafs.FileSystem.from_uri(storage)
        run = f"{root.rstrip('/')}/{name}"
        listing = filesystem.get_file_info(pafs.FileSelector(run, allow_not_found=True))
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise FadeError(f"cannot read checkpoint storage {storage}: {error}") from error
    folders = sorted(
        info.path
        for info in listing
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_")
    )
    for folder in reversed(folders):  # the newest that holds our progress file
        progress = f"{folder}/{PROGRESS_FILE}"
        if filesystem.get_file_info(progress).type == pafs.FileType.File:
            with filesystem.open_input_stream(progress) as stream:
                return folder, json.loads(stream.read())
    return None
