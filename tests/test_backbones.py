"""Backbone math and pipeline equivalence on tiny FLUX and SD models."""

from __future__ import annotations

import pytest
import torch

from fade.backbones import Backbone, load_backbone
from fade.backbones.loading import ModelLoadError, detect_family
from tests.tiny import TINY_SIZE, tiny_sd_pipeline

PROMPTS = ["a photo of a red circle", "the letter k in the style of striped"]


def _clean_latents(backbone: Backbone, batch: int) -> torch.Tensor:
    return backbone.initial_noise(batch, TINY_SIZE, TINY_SIZE, torch.Generator().manual_seed(7))


@pytest.mark.parametrize("sigma_value", [0.05, 0.5, 0.95])
def test_x0_recovered_from_ideal_prediction(backbone: Backbone, sigma_value: float) -> None:
    x0 = _clean_latents(backbone, 3)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((3,), sigma_value)
    z = backbone.add_noise(x0, noise, sigma)
    ideal = backbone.target_for(x0, noise, sigma)
    recovered = backbone.x0_from_prediction(z, sigma, ideal)
    torch.testing.assert_close(recovered, x0, rtol=1e-4, atol=1e-4)


def test_x0_recovered_with_v_prediction() -> None:
    from fade.backbones import wrap_pipeline

    backbone = wrap_pipeline(tiny_sd_pipeline(prediction_type="v_prediction"))
    x0 = _clean_latents(backbone, 2)
    noise = torch.randn(x0.shape)
    sigma = torch.tensor([0.2, 0.8])
    z = backbone.add_noise(x0, noise, sigma)
    recovered = backbone.x0_from_prediction(z, sigma, backbone.target_for(x0, noise, sigma))
    torch.testing.assert_close(recovered, x0, rtol=1e-4, atol=1e-4)


def test_noise_endpoints_follow_the_sigma_convention(backbone: Backbone) -> None:
    shape = _clean_latents(backbone, 1).shape
    zeros, ones = torch.zeros(shape), torch.ones(shape)
    noise_weight = [
        float(backbone.add_noise(zeros, ones, torch.tensor([s])).mean()) for s in (0, 1)
    ]
    signal_weight = [
        float(backbone.add_noise(ones, zeros, torch.tensor([s])).mean()) for s in (0, 1)
    ]
    assert noise_weight[0] < 0.05 and noise_weight[1] > 0.99
    assert signal_weight[0] > 0.99 and signal_weight[1] < 0.1


def _pipeline_images(backbone: Backbone, steps: int, guidance: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    kwargs = {"guidance_scale": guidance, "output_type": "pt", "generator": generator}
    if backbone.family == "flux":
        kwargs["max_sequence_length"] = backbone.max_sequence_length
    return backbone.pipeline(
        PROMPTS, height=TINY_SIZE, width=TINY_SIZE, num_inference_steps=steps, **kwargs
    ).images


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_full_sample_equals_the_pipeline_output(backbone: Backbone, guidance: float) -> None:
    steps, seed = 4, 123
    expected = _pipeline_images(backbone, steps, guidance, seed)
    noise = backbone.initial_noise(
        len(PROMPTS), TINY_SIZE, TINY_SIZE, torch.Generator().manual_seed(seed)
    )
    result = backbone.sample(
        noise,
        backbone.encode(PROMPTS),
        steps,
        guidance_scale=guidance,
        height=TINY_SIZE,
        width=TINY_SIZE,
    )
    assert result.sigma == 0.0
    images = backbone.decode(result.latents, TINY_SIZE, TINY_SIZE)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)


def test_partial_samples_compose_to_the_full_sample(backbone: Backbone) -> None:
    steps = 6
    cond = backbone.encode(PROMPTS)
    noise = backbone.initial_noise(
        len(PROMPTS), TINY_SIZE, TINY_SIZE, torch.Generator().manual_seed(5)
    )
    full = backbone.sample(noise, cond, steps, height=TINY_SIZE, width=TINY_SIZE)
    first = backbone.sample(noise, cond, steps, sigma_end=0.5, height=TINY_SIZE, width=TINY_SIZE)
    assert 0.0 < first.sigma <= 0.5
    second = backbone.sample(
        first.latents, cond, steps, sigma_start=first.sigma, height=TINY_SIZE, width=TINY_SIZE
    )
    torch.testing.assert_close(second.latents, full.latents, rtol=0, atol=1e-6)


def test_trajectory_states_cover_the_schedule_from_pure_noise(backbone: Backbone) -> None:
    """The erasure trains where layouts are decided (σ = 1) and never at σ = 0."""
    steps = 4
    cond = backbone.encode(PROMPTS)
    noise = backbone.initial_noise(
        len(PROMPTS), TINY_SIZE, TINY_SIZE, torch.Generator().manual_seed(5)
    )
    _, _, schedule = backbone.schedule(steps, TINY_SIZE, TINY_SIZE)
    generator = torch.Generator().manual_seed(0)
    seen = {}
    for _ in range(40):
        state = backbone.trajectory_state(noise, cond, steps, generator, TINY_SIZE, TINY_SIZE)
        seen[round(state.sigma, 4)] = state
    assert sorted(seen, reverse=True) == [round(float(s), 4) for s in schedule]
    assert torch.equal(seen[round(float(schedule[0]), 4)].latents, noise)
    index = 2  # a state after two steps is the two-step partial sample
    partial = backbone.sample(
        noise,
        cond,
        steps,
        sigma_end=float(schedule[index]) + 1e-4,
        height=TINY_SIZE,
        width=TINY_SIZE,
    )
    torch.testing.assert_close(seen[round(float(schedule[index]), 4)].latents, partial.latents)


def test_sample_with_grad_reaches_the_denoiser(backbone: Backbone) -> None:
    cond = backbone.encode(PROMPTS[:1])
    noise = backbone.initial_noise(1, TINY_SIZE, TINY_SIZE, torch.Generator().manual_seed(3))
    weight = next(p for p in backbone.denoiser.parameters() if p.dim() > 1)
    weight.requires_grad_(True)
    try:
        result = backbone.sample(noise, cond, 2, height=TINY_SIZE, width=TINY_SIZE, grad=True)
        result.latents.square().mean().backward()
        assert weight.grad is not None and weight.grad.abs().sum() > 0
    finally:
        weight.grad = None
        weight.requires_grad_(False)


def test_prompt_cache_returns_identical_encodings(backbone: Backbone) -> None:
    backbone.clear_prompt_cache()
    first = backbone.encode(PROMPTS)
    again = backbone.encode(list(reversed(PROMPTS)))
    torch.testing.assert_close(again.embeds, first.embeds.flip(0), rtol=0, atol=0)
    if first.pooled is not None:
        assert again.pooled is not None and again.pooled.shape == first.pooled.shape


def test_saved_pipeline_loads_back_with_identical_outputs(backbone: Backbone, tmp_path) -> None:
    backbone.pipeline.save_pretrained(tmp_path / "model")
    loaded = load_backbone(str(tmp_path / "model"), device="cpu", local_files_only=True)
    assert type(loaded) is type(backbone)
    assert detect_family(str(tmp_path / "model")) == backbone.family
    steps = 3
    noise = backbone.initial_noise(
        len(PROMPTS), TINY_SIZE, TINY_SIZE, torch.Generator().manual_seed(9)
    )
    ours = backbone.sample(
        noise, backbone.encode(PROMPTS), steps, height=TINY_SIZE, width=TINY_SIZE
    )
    theirs = loaded.sample(noise, loaded.encode(PROMPTS), steps, height=TINY_SIZE, width=TINY_SIZE)
    torch.testing.assert_close(theirs.latents, ours.latents, rtol=0, atol=0)


def test_loading_errors_are_user_errors(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=r"no model_index\.json"):
        load_backbone(str(tmp_path), device="cpu")
    with pytest.raises(ModelLoadError, match="cannot find model"):
        load_backbone("nobody/no-such-model", device="cpu", local_files_only=True)
    with pytest.raises(ModelLoadError, match="dtype"):
        load_backbone(str(tmp_path), dtype="float8")


def test_true_cfg_equals_the_pipeline_without_a_guidance_embedding() -> None:
    from fade.backbones import wrap_pipeline
    from fade.backbones.builders import FluxArch, build_flux_pipeline
    from tests.tiny import TINY_VOCABULARY

    pipeline = build_flux_pipeline(FluxArch(guidance_embeds=False), TINY_VOCABULARY, seed=2)
    pipeline.set_progress_bar_config(disable=True)
    backbone = wrap_pipeline(pipeline)
    steps, scale, seed = 3, 4.0, 11
    expected = pipeline(
        PROMPTS,
        negative_prompt=[""] * len(PROMPTS),
        true_cfg_scale=scale,
        height=TINY_SIZE,
        width=TINY_SIZE,
        num_inference_steps=steps,
        max_sequence_length=backbone.max_sequence_length,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    ).images
    noise = backbone.initial_noise(
        len(PROMPTS), TINY_SIZE, TINY_SIZE, torch.Generator().manual_seed(seed)
    )
    result = backbone.sample(
        noise, backbone.encode(PROMPTS), steps, scale, height=TINY_SIZE, width=TINY_SIZE
    )
    images = backbone.decode(result.latents, TINY_SIZE, TINY_SIZE)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
