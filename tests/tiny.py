"""Tiny FLUX and SD pipelines built from configs in code, shared by every test.

Seeded, `.eval()`, word-level tokenizers built offline: no hub, no download. Image size 32x32
gives FLUX 64 packed tokens and SD an 8x8 latent.
"""

from __future__ import annotations

from fade.backbones.builders import FluxArch, SDArch, build_flux_pipeline, build_sd_pipeline

TINY_SIZE = 32
TINY_VOCABULARY = tuple(
    "a an the photo of painting picture by in style with red blue green striped dotted "
    "circle square triangle star letter k airplane cat dog person object".split()
)


def tiny_flux_pipeline(seed: int = 0):
    return build_flux_pipeline(FluxArch(), TINY_VOCABULARY, seed=seed)


def tiny_sd_pipeline(seed: int = 0, prediction_type: str = "epsilon"):
    return build_sd_pipeline(SDArch(prediction_type=prediction_type), TINY_VOCABULARY, seed=seed)


def tiny_clip_folder(path, seed: int = 0):
    """A CLIPModel with seeded random weights and its CLIPProcessor (the real CLIP BPE
    tokenizer class on a 54-token letter vocabulary, the PIL image processor at 32 px), saved
    as a local folder: what `eval.clip_model` points at. Numbers from it are well formed and
    meaningless (no CLIP weights are reachable from here); its image and text embeddings share
    an offset, so their cosines are positive and a CLIP score above 0 lets H be computed."""
    import json
    import string
    from pathlib import Path

    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    letters = string.ascii_lowercase
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters)]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    images = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    text = dict(
        vocab_size=len(tokens),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    with torch.no_grad():  # both towers end in a shared offset: cosines > 0, so CLIP score > 0
        model.vision_model.post_layernorm.bias.fill_(2.0)
        model.text_model.final_layer_norm.bias.fill_(2.0)
        model.visual_projection.weight.copy_(model.text_projection.weight)
    model.eval().save_pretrained(folder)
    return folder
