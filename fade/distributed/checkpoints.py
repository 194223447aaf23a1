"""Erasure checkpoints: what a resumed or restarted run continues from.

A checkpoint folder holds `state.pt` (adapter weights by parameter name, both optimizers, the
discriminator, the loop's position and log; torch.save of plain tensors and numbers, loaded
with weights_only), `saliency.json` (the module selection, so a resumed run attaches LoRA to
exactly the same modules) and `progress.json` (the step and the settings' fingerprint). Under
data parallelism every worker holds the same replicated state, so a checkpoint written by
rank 0 resumes on any worker count.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from fade.config import FadeConfig, config_to_dict
from fade.saliency import SaliencySelection

STATE_FILE = "state.pt"
SELECTION_FILE = "saliency.json"
PROGRESS_FILE = "progress.json"
#: Sections that do not change what training computes: a checkpoint resumes across them.
_NOT_TRAINING = ("distributed", "output", "eval", "tune", "serve")


def fingerprint(cfg: FadeConfig) -> str:
    """Hash of the settings that shape training (the worker count is not one of them)."""
    data = {k: v for k, v in config_to_dict(cfg).items() if k not in _NOT_TRAINING}
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
    state = torch.load(directory / STATE_FILE, weights_only=True)
    progress = json.loads((directory / PROGRESS_FILE).read_text())
    return selection, state, progress


def latest_progress(run_folder: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint's folder and progress under a Ray Train run folder, if any."""
    found = sorted(run_folder.glob(f"checkpoint_*/{PROGRESS_FILE}"), key=lambda p: p.parent.name)
    if not found:
        return None
    return found[-1].parent, json.loads(found[-1].read_text())
