"""The run directory (DESIGN.md section 3): adapter, manifest, metrics, written all or nothing.

Everything is staged in a sibling temporary folder and moved into place at the end, so a failed
or interrupted run never leaves a half-written directory; a directory that holds another run
is refused unless the user asks to overwrite it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from fade.errors import FadeError

MANIFEST = "manifest.json"
METRICS = "metrics.json"
ADAPTER = "adapter"
PACKAGES = ("torch", "diffusers", "peft", "transformers", "ray", "deepspeed", "fade")


class RunDirectoryError(FadeError):
    """The output directory cannot be used."""


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse a directory that holds another run (or anything else) unless `overwrite`."""
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"output {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        what = "another run" if (path / MANIFEST).exists() else "files"
        raise RunDirectoryError(
            f"output directory {path} holds {what}: pass --overwrite to replace it"
        )


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class RunWriter:
    """Stage files for a run directory, then `commit()` them into place in one move."""

    def __init__(self, path: Path, overwrite: bool):
        check_output_dir(path, overwrite)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))

    def add_tree(self, name: str, source: Path) -> Path:
        target = self.staging / name
        shutil.copytree(source, target)
        return target

    def write_json(self, name: str, data: dict) -> Path:
        target = self.staging / name
        target.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return target

    def commit(self) -> Path:
        if self.path.exists():
            shutil.rmtree(self.path)
        self.staging.rename(self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
