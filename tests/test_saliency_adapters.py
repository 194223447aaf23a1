"""Saliency ranks projections; LoRA lands on exactly the selected ones and round-trips."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer

from fade.adapters import (
    ADAPTER_NAME,
    adapter_modules,
    adapter_size_bytes,
    attach_lora,
    fuse_into_weights,
    load_adapter,
    lora_parameters,
    save_adapter,
)
from fade.backbones import Backbone, wrap_pipeline
from fade.saliency import candidate_modules, concept_saliency, locate_concept, select_top
from tests.tiny import TINY_SIZE, tiny_flux_pipeline, tiny_sd_pipeline

TARGET = ["a photo of a red circle", "a red circle in the style of dotted"]
NEUTRAL = ["a photo of a red object", "a red object in the style of dotted"]
BUILDERS = {"flux": tiny_flux_pipeline, "sd": tiny_sd_pipeline}


def fresh(family: str, seed: int = 0) -> Backbone:
    pipeline = BUILDERS[family](seed=seed)
    pipeline.set_progress_bar_config(disable=True)
    return wrap_pipeline(pipeline)


def images(backbone: Backbone, seed: int = 4) -> torch.Tensor:
    noise = backbone.initial_noise(2, TINY_SIZE, TINY_SIZE, torch.Generator().manual_seed(seed))
    result = backbone.sample(noise, backbone.encode(TARGET), 3, height=TINY_SIZE, width=TINY_SIZE)
    return backbone.decode(result.latents, TINY_SIZE, TINY_SIZE)


@pytest.mark.parametrize("family", ["flux", "sd"])
def test_candidates_are_attention_and_feed_forward_projections(family: str) -> None:
    names = candidate_modules(fresh(family).denoiser, family)
    assert names and all(("attn" in n or "ff" in n or "proj" in n) for n in names)
    assert not any(
        n.startswith(("x_embedder", "context_embedder", "time_text_embed")) for n in names
    )


def test_select_top_keeps_the_highest_fraction_in_model_order() -> None:
    scores = {"a": 0.1, "b": 0.9, "c": 0.5, "d": 0.7}
    assert select_top(scores, 0.5) == ["b", "d"]
    assert select_top(scores, 0.01) == ["b"]
    assert select_top(scores, 1.0) == list(scores)
    with pytest.raises(ValueError):
        select_top(scores, 0.0)


@pytest.mark.parametrize("family", ["flux", "sd"])
def test_saliency_scores_every_candidate_and_leaves_weights_frozen(family: str) -> None:
    backbone = fresh(family)
    selection = locate_concept(
        backbone,
        TARGET,
        NEUTRAL,
        sparsity=0.25,
        batches=1,
        batch_size=2,
        sample_steps=2,
        size=(TINY_SIZE, TINY_SIZE),
    )
    candidates = candidate_modules(backbone.denoiser, family)
    assert set(selection.scores) == set(candidates)
    assert sum(score > 0 for score in selection.scores.values()) > len(candidates) // 2
    assert len(selection.selected) == max(1, -(-len(candidates) // 4))
    assert not any(p.requires_grad for p in backbone.denoiser.parameters())
    assert selection.to_dict()["ranking"][0][1] >= selection.to_dict()["ranking"][-1][1]


@pytest.mark.parametrize("family", ["flux", "sd"])
def test_contrast_saliency_is_the_concepts_saliency_over_its_neighbours(family: str) -> None:
    """erase.saliency_contrast: the concept's mean |grad| divided by the largest of its
    neighbours' at the same states. A neighbour that is the concept itself scores every
    module 1."""
    backbone = fresh(family)
    settings = {"batches": 1, "batch_size": 2, "sample_steps": 2, "size": (TINY_SIZE, TINY_SIZE)}
    plain = concept_saliency(backbone, TARGET, NEUTRAL, **settings)
    itself = concept_saliency(backbone, TARGET, NEUTRAL, contrasts=[TARGET], **settings)
    assert itself == {name: 1.0 if score > 0 else 0.0 for name, score in plain.items()}
    swapped = concept_saliency(backbone, TARGET, NEUTRAL, contrasts=[TARGET[::-1]], **settings)
    assert set(swapped) == set(plain) and swapped != itself
    both = concept_saliency(backbone, TARGET, NEUTRAL, contrasts=[TARGET, NEUTRAL], **settings)
    # The largest neighbour saliency divides: next to the concept itself, the neutral prompt
    # (whose difference from itself is zero) changes nothing.
    assert both == itself
    with pytest.raises(ValueError, match="aligned"):
        concept_saliency(backbone, TARGET, NEUTRAL, contrasts=[TARGET[:1]], **settings)


@pytest.mark.parametrize("family", ["flux", "sd"])
def test_conditioning_candidates_are_where_the_prompt_enters(family: str) -> None:
    denoiser = fresh(family).denoiser
    conditioning = candidate_modules(denoiser, family, "conditioning")
    blocks = candidate_modules(denoiser, family, "blocks")
    if family == "flux":  # the token and pooled text embedders
        assert conditioning == [
            "time_text_embed.text_embedder.linear_1",
            "time_text_embed.text_embedder.linear_2",
            "context_embedder",
        ]
        assert not set(conditioning) & set(blocks)
    else:  # cross-attention keys and values: they only ever see the prompt
        assert conditioning and all(n.endswith(("attn2.to_k", "attn2.to_v")) for n in conditioning)
    every = candidate_modules(denoiser, family, "all")
    assert set(every) == set(blocks) | set(conditioning)
    with pytest.raises(ValueError, match="candidate group"):
        candidate_modules(denoiser, family, "everything")


@pytest.mark.parametrize(
    ("family", "group"), [("flux", "blocks"), ("sd", "blocks"), ("flux", "conditioning")]
)
def test_adapter_round_trips_fuses_and_unfuses(family: str, group: str, tmp_path) -> None:
    trained = fresh(family)
    base_images = images(trained)
    modules = candidate_modules(trained.denoiser, family, group)[:3]
    attach_lora(trained, modules, rank=2, alpha=8.0)  # alpha != rank: metadata must survive
    assert torch.equal(images(trained), base_images), "a new adapter starts as the identity"
    with torch.no_grad():
        for p in lora_parameters(trained):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    erased_images = images(trained)
    assert not torch.allclose(erased_images, base_images, atol=1e-3)
    save_adapter(trained, tmp_path)
    assert adapter_modules(tmp_path) == sorted(modules)
    assert adapter_size_bytes(tmp_path) > 0

    reloaded = fresh(family)
    load_adapter(reloaded, tmp_path)
    torch.testing.assert_close(images(reloaded), erased_images, rtol=0, atol=1e-5)
    reloaded.pipeline.fuse_lora()
    torch.testing.assert_close(images(reloaded), erased_images, rtol=0, atol=1e-4)
    reloaded.pipeline.unfuse_lora()
    reloaded.pipeline.disable_lora()
    torch.testing.assert_close(images(reloaded), base_images, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["flux", "sd"])
def test_fused_adapter_draws_what_the_loaded_one_draws_without_lora_layers(
    family: str, tmp_path
) -> None:
    """The evaluation measures an adapter fused (as deployed): it must draw the loaded
    adapter's images, and no LoRA layer may be left that could switch it off."""
    trained = fresh(family)
    attach_lora(trained, candidate_modules(trained.denoiser, family)[:4], rank=2)
    with torch.no_grad():
        for p in lora_parameters(trained):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.3)
    save_adapter(trained, tmp_path)
    base_images = images(fresh(family))

    model = fresh(family)
    load_adapter(model, tmp_path)
    loaded_images = images(model)
    fuse_into_weights(model, [ADAPTER_NAME])
    assert not any(isinstance(m, LoraLayer) for m in model.denoiser.modules())
    torch.testing.assert_close(images(model), loaded_images, rtol=0, atol=1e-4)
    assert not torch.allclose(images(model), base_images, atol=1e-3)
