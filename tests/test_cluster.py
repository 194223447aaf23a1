"""cluster/: the manifests stay true to the code (Ray version, entry points, settings)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from fade.config import load_config

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"


def _ray_pin() -> str:
    text = (REPO / "pyproject.toml").read_text()
    return text.split('"ray[train,tune,serve]==')[1].split('"')[0]


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def _images(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image" and isinstance(v, str)] + [
            i for v in node.values() for i in _images(v)
        ]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


def test_every_manifest_pins_the_ray_version_fade_pins() -> None:
    pin = _ray_pin()
    aws = _load("aws-gpu.yaml")
    assert aws["docker"]["image"] == f"rayproject/ray:{pin}-py311-gpu"
    assert f"FROM rayproject/ray:{pin}-py311-gpu" in (CLUSTER / "Dockerfile").read_text()
    for name in ("raycluster.yaml", "rayjob-erase.yaml", "rayservice.yaml"):
        manifest = _load(f"kuberay/{name}")
        spec = manifest["spec"]
        cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
        assert cluster["rayVersion"] == pin, name
        assert set(_images(manifest)) == {"YOUR-REGISTRY/fade:0.1.0"}, name
    for command in aws["setup_commands"]:
        assert "scripts/constraints.txt" in command and (REPO / "scripts/constraints.txt").exists()
    assert _load("runtime_env.yaml")["working_dir"] == "."


def test_the_rayjob_entrypoint_is_a_valid_erase_command() -> None:
    entrypoint = shlex.split(_load("kuberay/rayjob-erase.yaml")["spec"]["entrypoint"])
    assert entrypoint[:2] == ["python", "/home/ray/fade/jobs/erase.py"]
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "erase.py"), *entrypoint[2:], "--dry-run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "airplane" in result.stdout


def test_the_rayservice_application_builds_from_its_arguments(tmp_path: Path) -> None:
    from ray.serve import Application

    from fade.serve.runner import application

    serve_config = yaml.safe_load(_load("kuberay/rayservice.yaml")["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    assert app["import_path"] == "fade.serve.runner:application"
    load_config(None, app["args"]["overrides"])  # every setting exists and is in range
    # The builder itself, on the toy model (the manifest's FLUX weights are not here).
    built = application({"overrides": [f"serve.registry=[{tmp_path}]"]})
    assert isinstance(built, Application)


def test_serve_run_text_arguments_are_parsed_like_the_manifest_list(tmp_path: Path) -> None:
    import pytest

    from fade.errors import FadeError
    from fade.serve.runner import application

    application({"overrides": f"serve.registry=[{tmp_path}] serve.max_count=2"})
    with pytest.raises(FadeError, match="unknown application arguments"):
        application({"registry": "x"})
