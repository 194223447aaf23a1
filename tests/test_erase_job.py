"""End to end on the toy world through Ray Train: erasure erases, and the run directory is whole.

One short run (2 workers, DDP over gloo) shared by the assertions below; a broken loss, a broken
gradient sync or a broken adapter save fails here.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from fade.adapters import adapter_modules
from fade.config import load_config
from fade.eval.metrics import score_value
from fade.run import erase
from fade.rundir import RunDirectoryError, check_output_dir
from tests import test_report

# tests/test_report.py's Chromium fixture, used here as `chromium`.
chromium = test_report.browser

SHORT = [
    "concepts.names=velmora",
    "erase.steps=40",
    "erase.eval_every=20",
    "erase.batch_size=6",
    "erase.disc_pretrain_steps=10",
    "concepts.prompts_per_concept=24",
    "eval.samples_per_prompt=2",
    "distributed.num_workers=2",
    # Retained neighbours on 8 images each and FD on 16 (the bounds below are wide enough for
    # 32 retained images), and 40 steps, which erase velmora fully: the suite's time.
    "eval.images_per_neighbour=8",
    "eval.fd_samples=16",
]


@pytest.fixture(scope="module")
def short_run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "velmora"
    return erase(load_config(overrides=[*SHORT, f"output.dir={out}"]))


def test_target_falls_and_retained_holds(short_run) -> None:
    acc = short_run.metrics["acc"]
    assert acc["target"]["before"] >= 60, acc
    assert acc["target"]["after"] <= acc["target"]["before"] - 40, acc
    assert acc["retained"]["after"] >= acc["retained"]["before"] - 20, acc


def test_run_directory_is_complete(short_run) -> None:
    path = short_run.path
    manifest = json.loads((path / "manifest.json").read_text())
    assert (path / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["acc"]["target"] and metrics["alignment"]["metric"] == "adherence"
    assert score_value(metrics) > 50.0  # H can pass 100 when adherence rises (DESIGN.md sec. 3)
    assert (
        metrics["acc"]["target"]["detector"] == "toy"
        and metrics["scores"]["H"]["samples"]["target"]
    )
    rows = pq.read_table(path / "metrics.parquet").to_pylist()
    assert {r["concept"] for r in rows} >= {"velmora", None}
    assert {r["config_hash"] for r in rows} == {manifest["config_hash"]}
    report = (path / "report.html").read_text()
    images = re.findall(r'src="([^"]+)"', report)
    assert images and all((path / image).is_file() for image in images)
    assert manifest["concepts"][0]["name"] == "velmora"
    assert manifest["training"]["workers"] == 2
    assert adapter_modules(path / "adapter") == sorted(manifest["saliency"]["selected"])
    with pytest.raises(RunDirectoryError, match="--overwrite"):
        check_output_dir(path, overwrite=False)


def test_the_adapter_works_in_plain_diffusers_and_is_reversible(short_run) -> None:
    """The product test: FluxPipeline.load_lora_weights reproduces FADE's erased images exactly;
    fuse_lora bakes them in, unfuse_lora gives the base model back."""
    import torch
    from diffusers import FluxPipeline

    from fade.adapters import load_adapter
    from fade.backbones import load_backbone
    from fade.backbones.loading import resolve_model_path
    from fade.eval.sampling import generate
    from fade.toyworld.spec import MAX_TOKENS

    prompt = "a circle by velmora"
    pipe = FluxPipeline.from_pretrained(resolve_model_path("toy"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def diffusers_image() -> torch.Tensor:
        return pipe(
            [prompt],
            negative_prompt=[""],
            true_cfg_scale=3.5,
            height=32,
            width=32,
            max_sequence_length=MAX_TOKENS,
            num_inference_steps=8,
            output_type="pt",
            generator=torch.Generator().manual_seed(7),
        ).images

    base = diffusers_image()
    pipe.load_lora_weights(str(short_run.path / "adapter"), adapter_name="fade")
    erased = diffusers_image()
    assert not torch.allclose(erased, base, atol=1e-2), "the adapter changes nothing"

    backbone = load_backbone("toy", local_files_only=True)
    load_adapter(backbone, short_run.path / "adapter")
    ours = generate(backbone, [prompt], seed=7, num_steps=8, guidance_scale=3.5)
    torch.testing.assert_close(ours, erased, rtol=0, atol=1e-5)

    pipe.fuse_lora()
    torch.testing.assert_close(diffusers_image(), erased, rtol=0, atol=1e-4)
    pipe.unfuse_lora()
    pipe.disable_lora()
    torch.testing.assert_close(diffusers_image(), base, rtol=0, atol=1e-5)


def test_the_real_runs_report_loads_in_chromium(short_run, chromium, tmp_path) -> None:
    """Issue 5, point 3: the report of a real erasure run, every image loaded, not blank."""
    images = test_report._load(chromium, short_run.path / "report.html")
    assert images and all(i["width"] > 0 and i["height"] > 0 for i in images), images
    shot = np.asarray(test_report.screenshot(chromium, tmp_path / "report.png"))
    assert shot.std() > 10  # not a blank page


@pytest.fixture(scope="module")
def surrogate_run(ray_session, tmp_path_factory):
    """Issue 4, point 3, as a user runs it: `jobs/erase.py --concepts diamond --surrogate square`
    with every training setting at its default (the redirect recipe). Its evaluation is lighter
    (the training's 600 steps are the slow part it cannot lose): 16 images per retained
    neighbour and 32 neutral images for FD_toy."""
    out = tmp_path_factory.mktemp("runs") / "diamond-to-square"
    overrides = ["concepts.names=diamond", "concepts.surrogate=square", f"output.dir={out}"]
    light_eval = ["eval.images_per_neighbour=16", "eval.fd_samples=32"]
    return erase(load_config(overrides=[*overrides, *light_eval]))


def test_a_surrogate_takes_the_erased_concepts_place(surrogate_run) -> None:
    metrics, manifest = surrogate_run.metrics, surrogate_run.manifest
    assert manifest["config"]["erase"]["recipe"] == "redirect"
    assert manifest["config"]["erase"]["candidates"] == "conditioning"
    assert set(manifest["saliency"]["selected"]) <= {
        "context_embedder",
        "time_text_embed.text_embedder.linear_1",
        "time_text_embed.text_embedder.linear_2",
    }
    assert metrics["acc"]["target"]["before"] >= 60 and metrics["acc"]["target"]["after"] <= 10
    assert metrics["acc"]["synonyms"]["after"] <= 10
    # The acceptance run on a 2-core machine gave 71.9% (docs/erasure.md); the margin is for
    # floating-point differences between machines, on 32 images.
    assert metrics["surrogate"]["concept"] == "square" and metrics["surrogate"]["after"] >= 60
    assert metrics["acc"]["retained"]["after"] >= metrics["acc"]["retained"]["before"] - 10


def _kill_a_training_worker_after_first_checkpoint(run_folder, deadline_s: float = 300) -> int:
    """SIGKILL one Ray Train worker process once `run_folder` holds a checkpoint (found by its
    process title, `ray::RayTrainWorker...`); returns its pid."""
    import os
    import signal
    import time
    from pathlib import Path

    deadline = time.time() + deadline_s
    while not list(run_folder.glob("checkpoint_*/progress.json")):
        assert time.time() < deadline, f"no checkpoint appeared in {run_folder}"
        time.sleep(0.5)
    time.sleep(2)  # let Ray Train finish registering the checkpoint it is uploading
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # processes come and go while we look
            continue
        if proc.name.isdigit() and title.startswith("ray::RayTrainWorker"):
            os.kill(int(proc.name), signal.SIGKILL)
            return int(proc.name)
    raise AssertionError("no Ray Train worker process found")


def _erase_while_killing_a_worker(overrides: list[str]):
    """Run erase() in a thread and kill a worker after its first checkpoint; returns the
    result, or the exception the run ended with."""
    import threading
    from pathlib import Path

    cfg = load_config(overrides=overrides)
    from fade.run import checkpoint_location

    storage, name = checkpoint_location(cfg)
    outcome: dict = {}
    run_folder = Path(storage) / name

    def run() -> None:
        try:
            outcome["result"] = erase(cfg)
        except Exception as error:  # handed to the test thread, which asserts on it
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    killed = _kill_a_training_worker_after_first_checkpoint(run_folder)
    thread.join(timeout=600)
    assert not thread.is_alive()
    return outcome, killed, run_folder


def _erases_as_well_as(result, undisturbed) -> None:
    """Target Acc within 2 of the same 16 images of the undisturbed run; retained Acc held by
    the bound the undisturbed run is held to (test_target_falls_and_retained_holds)."""
    acc, reference = result.metrics["acc"], undisturbed.metrics["acc"]
    assert acc["target"]["before"] == reference["target"]["before"], (acc, reference)
    assert acc["target"]["after"] <= reference["target"]["after"] + 12.5, (acc, reference)
    assert acc["retained"]["after"] >= acc["retained"]["before"] - 20, acc


def test_a_killed_worker_is_replaced_and_the_run_continues_from_its_checkpoint(
    short_run, tmp_path
) -> None:
    outcome, _, run_folder = _erase_while_killing_a_worker(
        [*SHORT, f"output.dir={tmp_path / 'faulty'}", "distributed.max_failures=1"]
    )
    assert "error" not in outcome, outcome.get("error")
    training = outcome["result"].manifest["training"]
    assert training["resumed_from_step"] == 20 and training["steps_run"] == 40, training
    _erases_as_well_as(outcome["result"], short_run)
    assert not run_folder.exists()  # checkpoints are removed once the run directory is written


def test_a_stopped_run_resumes_on_fewer_workers(short_run, tmp_path, capsys) -> None:
    """The whole job fails (no failures allowed); the same command with one worker instead of
    two resumes from the last checkpoint instead of starting over."""
    from fade.errors import FadeError

    out = f"output.dir={tmp_path / 'stopped'}"
    outcome, _, run_folder = _erase_while_killing_a_worker(
        [*SHORT, out, "distributed.max_failures=0"]
    )
    assert isinstance(outcome.get("error"), FadeError), outcome
    assert "the same command resumes" in str(outcome["error"])
    assert list(run_folder.glob("checkpoint_*")) and not (tmp_path / "stopped").exists()
    changed = load_config(overrides=[*SHORT, out, "erase.lr=0.01"])
    with pytest.raises(FadeError, match="holds checkpoints of an erasure with other settings"):
        erase(changed)
    result = erase(load_config(overrides=[*SHORT, out, "distributed.num_workers=1"]))
    training = result.manifest["training"]
    assert training["resumed_from_step"] >= 20 and training["workers"] == 1, training
    assert "from step" in capsys.readouterr().out
    _erases_as_well_as(result, short_run)


def test_the_cleaners_state_api_warning_is_dropped_and_nothing_else(caplog) -> None:
    import logging

    from fade.distributed.ray_logs import (
        _CLEANER_LOGGER,
        _STATE_API_WARNING,
        quiet_state_api_warnings,
    )

    quiet_state_api_warnings()
    cleaner = logging.getLogger(_CLEANER_LOGGER)
    with caplog.at_level(logging.WARNING, logger=_CLEANER_LOGGER):
        cleaner.warning(_STATE_API_WARNING + ". State API may be temporarily unavailable.")
        cleaner.warning("Failed to clean up placement group: boom")
    assert [record.getMessage() for record in caplog.records] == [
        "Failed to clean up placement group: boom"
    ]
