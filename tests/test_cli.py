"""Entry points: `--help` works, a plan resolves, and user mistakes are one line with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fade.concepts import ConceptError
from fade.config import load_config
from fade.plan import make_plan
from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent
HUB_MODEL = "black-forest-labs/FLUX.1-dev"  # planning never loads it


def run_job(*args: str, script: str = "erase.py") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_help_names_the_shortcuts_and_overrides() -> None:
    result = run_job("--help")
    assert result.returncode == 0
    for flag in ("--config", "--concepts", "--surrogate", "--out", "--dry-run", "key=value"):
        assert flag in result.stdout


def test_dry_run_prints_the_plan() -> None:
    result = run_job(
        "--dry-run", "--model", HUB_MODEL, "--catalog", "cifar10", "--concepts", "airplane,ship"
    )
    assert result.returncode == 0, result.stderr
    assert "concepts     airplane, ship" in result.stdout
    assert "64 target" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["erase.t0=1.5"], "erase.t0 = 1.5 is out of range: must be in (0, 1]"),
        (["erase.tzero=0.5"], "did you mean 'erase.t0'"),
        (["--catalog", "cifar10", "--concepts", "airplan"], "did you mean: airplane"),
        (["--catalog", "cifar10", "--concepts", "ship", "--surrogate", "ship"], "surrogate"),
        (["--catalog", "nowhere"], "unknown catalog 'nowhere'"),
        (["erase.sparsity=0"], "erase.sparsity"),
        (["erase.sparsity=1.5"], "erase.sparsity = 1.5 is out of range"),
        (["erase.t0=0"], "erase.t0 = 0 is out of range"),
        (["--concepts", ""], "--concepts was given an empty value"),
        (["concepts.names=[]"], "the concept list is empty"),
        (["--concepts", "circel"], "did you mean: circle"),
        (["--catalog", "cifar10", "--concepts", "airplane"], "vocabulary has no word 'airplane'"),
        (["--concepts", "circle", "--surrogate", "disc"], "surrogate 'disc' is the concept"),
    ],
)
def test_user_mistakes_are_one_line_errors(args: list[str], message: str) -> None:
    result = run_job("--dry-run", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]


def test_concept_set_forms_resolve() -> None:
    hub = f"model.path={HUB_MODEL}"
    whole = make_plan(load_config(overrides=[hub, "concepts.concept_set=mass100"]))
    assert len(whole.concepts) == 100
    subset = make_plan(load_config(overrides=[hub, "concepts.concept_set=mass100:animals"]))
    assert len(subset.concepts) == 10
    named = make_plan(
        load_config(overrides=[hub, "concepts.catalog=cifar10", "concepts.concept_set=vehicles"])
    )
    assert {spec.category for spec in named.concepts} == {"object"}


def test_surrogate_needs_exactly_one_concept() -> None:
    cfg = load_config(
        overrides=["concepts.catalog=cifar10", "concepts.names=cat,dog", "concepts.surrogate=frog"]
    )
    with pytest.raises(ConceptError, match="one concept"):
        make_plan(cfg)


def test_toy_model_refuses_words_it_never_saw() -> None:
    cfg = load_config(overrides=["concepts.catalog=cifar10", "concepts.names=airplane"])
    with pytest.raises(ConceptError, match="vocabulary has no word 'airplane'"):
        make_plan(cfg)


def test_an_output_directory_holding_another_run_is_refused_and_left_alone(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    result = run_job("--concepts", "circle", "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"error: output directory {out} holds another run: pass --overwrite to replace it"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging folder left behind
    assert [p.name for p in out.iterdir()] == ["manifest.json"]


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return run_job(*args, script="serve.py")


def test_serve_help_names_its_flags() -> None:
    result = run_serve("--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--registry", "--policy", "/v1/images", "key=value"):
        assert flag in result.stdout


def test_serve_mistakes_are_one_line_before_anything_starts(tmp_path: Path) -> None:
    """Each is refused before Ray starts (seconds, not a failed deployment)."""
    import json
    import socket

    run = tmp_path / "diamond"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    (run / "manifest.json").write_text(json.dumps({"model": {"path": "toy"}, "concepts": []}))
    empty = tmp_path / "empty"  # a registry that logs nothing before the model's error
    empty.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        cases = [
            (["serve.port=0"], "serve.port = 0 is out of range"),
            (["--port", str(busy)], f"cannot listen on 127.0.0.1:{busy}"),
            (["--registry", str(tmp_path), "--policy", "nope"], "serve.policy names nope"),
            (
                ["--registry", str(empty), "--model", str(tmp_path / "missing")],
                "cannot find model",
            ),
        ]
        for args, message in cases:
            result = run_serve(*args)
            assert result.returncode == 2, (args, result.stderr)
            assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_interrupted_run_says_what_was_kept_and_exits_130(capsys) -> None:
    from fade.errors import Interrupted, run_cli

    def main() -> int:
        raise Interrupted(
            "the erasure was stopped (checkpoints kept in X: the same command resumes)"
        )

    assert run_cli(main) == 130
    assert capsys.readouterr().err == (
        "interrupted: the erasure was stopped (checkpoints kept in X: the same command resumes)\n"
    )


def test_a_ctrl_c_outside_training_is_one_line_and_130(capsys) -> None:
    """Ctrl-C during an evaluation reaches the entry point as a bare KeyboardInterrupt."""
    from fade.errors import run_cli

    def main() -> int:
        raise KeyboardInterrupt

    assert run_cli(main) == 130
    assert capsys.readouterr().err == "interrupted: stopped by Ctrl-C before it finished\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "1,x"], "expected numbers like 1,2"),
        (["--strategies", "ddp,zero9"], "distributed.strategy = 'zero9' is not allowed"),
    ],
)
def test_the_scaling_benchmark_refuses_mistakes_in_one_line(args, message) -> None:
    """Every combination is validated before Ray starts."""
    done = run_job("scaling", *args, script="benchmark.py")
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 5


def test_the_plan_says_what_paired_preservation_holds() -> None:
    """As the loop decides it: neighbour sentences, retain prompts where a row has no
    neighbour (or neutral prompts without retain prompts), or nothing at all."""
    from fade.plan import _paired_description

    assert _paired_description(False, "neighbours", 8, ["a circle"]) == "off"
    assert _paired_description(True, "neighbours", 8, ["a circle", "a star"]) == "on (neighbours)"
    assert _paired_description(True, "neighbours", 0, ["a circle", ""]) == (
        "on (neighbours for 1 of 2 rows, their neutral prompts for the rest)"
    )
    assert "no same-category neighbours" in _paired_description(True, "neighbours", 8, ["", ""])
    assert _paired_description(True, "neighbours", 0, ["", ""]).startswith("off (no retain")
    assert _paired_description(True, "retain", 8, ["a circle"]) == "on (retain prompts)"
    plan = make_plan(load_config(overrides=["concepts.names=diamond", "concepts.retain_prompts=0"]))
    assert "paired_preservation=on (neighbours)" in plan.summary()


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("jobs/erase.py", ["--dry-run", "erase.t0=1.5"], "erase.t0 = 1.5 is out of range"),
        ("jobs/erase.py", ["--concepts", "circel"], "did you mean: circle"),
        ("tune/sweep.py", ["--concepts", "dragon"], "unknown concept 'dragon'"),
        (
            "jobs/serve.py",
            ["--port", "FREE", "--registry", "TMP", "--policy", "[x]"],
            "serve.policy names x",
        ),
    ],
)
def test_a_mistake_is_answered_before_torch_or_ray_is_imported(
    script: str, args: list[str], message: str, tmp_path: Path
) -> None:
    """A typo answers in a fraction of a second, not after the seconds torch and Ray take."""
    placeholders = {"FREE": str(free_port()), "TMP": str(tmp_path)}  # serve checks the port
    args = [placeholders.get(arg, arg) for arg in args]
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(REPO / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-500:]
    lines = result.stderr.splitlines()
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")
    }
    errors = [line for line in lines if not line.startswith("import time:")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors
    assert "fade.config" in imported and not {"torch", "ray", "diffusers"} & imported
