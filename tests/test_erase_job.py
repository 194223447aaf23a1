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
    "erase.steps=60",
    "erase.eval_every=20",
    "erase.batch_size=6",
    "erase.disc_pretrain_steps=10",
    "concepts.prompts_per_concept=24",
    "eval.samples_per_prompt=2",
    "distributed.num_workers=2",
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
    with every other setting at its default (the redirect recipe)."""
    out = tmp_path_factory.mktemp("runs") / "diamond-to-square"
    overrides = ["concepts.names=diamond", "concepts.surrogate=square", f"output.dir={out}"]
    return erase(load_config(overrides=overrides))


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
    # The acceptance run on a 2-core machine gave 75% (docs/erasure.md); the margin is for
    # floating-point differences between machines, on 32 images.
    assert metrics["surrogate"]["concept"] == "square" and metrics["surrogate"]["after"] >= 60
    assert metrics["acc"]["retained"]["after"] >= metrics["acc"]["retained"]["before"] - 10
