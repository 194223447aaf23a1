"""The replica's engine without Ray: mixed-adapter batches, the fused policy, the coalescer."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fade.adapters import attach_lora, lora_parameters, save_adapter
from fade.backbones import load_backbone
from fade.saliency import candidate_modules
from fade.serve.app import Coalescer
from fade.serve.engine import ImageEngine, ImageRequest
from fade.serve.registry import check_policy, scan


def _random_run(root: Path, name: str, seed: int, share: float) -> None:
    """A run directory with a random LoRA (no training: the engine only moves weights)."""
    backbone = load_backbone("toy", local_files_only=True)
    modules = candidate_modules(backbone.denoiser, backbone.family)
    attach_lora(backbone, modules[: max(1, round(share * len(modules)))], rank=2 + seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in lora_parameters(backbone):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    save_adapter(backbone, root / name / "adapter")
    manifest = {"model": {"path": "toy"}, "concepts": [{"name": name}]}
    (root / name / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("engine-registry")
    _random_run(root, "a", seed=1, share=0.5)
    _random_run(root, "b", seed=2, share=0.25)  # other modules, another rank
    return scan([str(root)], "toy")


def _pixels(pngs: list[bytes]) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(png))).astype(int) for png in pngs]


def _request(adapter: str, seed: int) -> ImageRequest:
    return ImageRequest("a red circle", adapter, seed=seed, steps=4, size=32)


def test_a_mixed_batch_equals_each_request_alone(registry) -> None:
    engine = ImageEngine(load_backbone("toy", local_files_only=True), registry, [])
    requests = [_request(a, s) for a, s in [("a", 1), ("b", 2), ("none", 3), ("a", 4)]]
    together = [_pixels(p)[0] for p in engine.generate(requests)]
    alone = [_pixels(engine.generate([r])[0])[0] for r in requests]
    for mixed, single in zip(together, alone, strict=True):
        assert np.abs(mixed - single).max() <= 1  # float order only
    base = _pixels(engine.generate([_request("none", 1)])[0])[0]
    assert np.abs(alone[0] - base).max() > 10  # the adapter does change the image


def test_an_evicted_adapter_comes_back_the_same(registry) -> None:
    """Serve evicts an adapter (release), a mixed batch runs without it, and a later request
    for it loads it again: the cached stacked weights must follow."""
    engine = ImageEngine(load_backbone("toy", local_files_only=True), registry, [])
    first = _pixels(engine.generate([_request("a", 6)])[0])[0]
    engine.generate([_request("a", 1), _request("b", 2)])
    engine.release("a")
    engine.generate([_request("b", 3), _request("none", 4)])
    assert "a" not in engine._loaded
    again = engine.generate([_request("a", 6), _request("b", 7)])
    assert np.abs(_pixels(again[0])[0] - first).max() <= 1


def test_the_policy_is_fused_and_leaves_no_lora_layer(registry) -> None:
    policed = ImageEngine(
        load_backbone("toy", local_files_only=True), registry, check_policy(["a"], registry)
    )
    assert not [n for n, _ in policed.backbone.denoiser.named_modules() if "lora" in n]
    fused = _pixels(policed.generate([_request("none", 5)])[0])[0]
    plain = ImageEngine(load_backbone("toy", local_files_only=True), registry, [])
    with_lora = _pixels(plain.generate([_request("a", 5)])[0])[0]
    assert np.abs(fused - with_lora).max() <= 1


def test_the_coalescer_joins_concurrent_calls_into_one_run() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        calls.append(items)
        return [item * 10 for item in items]

    async def main() -> list[list[int]]:
        coalescer = Coalescer(run)
        return await asyncio.gather(coalescer.submit([1, 2]), coalescer.submit([3]))

    assert asyncio.run(main()) == [[10, 20], [30]]
    assert calls == [[1, 2, 3]]
