"""CLIP score and CLIP zero-shot concept detection, with transformers' CLIPModel.

- **CLIP score** (the alignment metric of DESIGN.md section 3 on a real model): for image i and
  the prompt it was generated from, 100 x max(cos(E_image, E_text), 0), the form of the
  CLIP-score literature (Hessel et al. 2021 with w = 1, as torchmetrics' CLIPScore reports it).
- **Zero-shot detector** (``eval.detector=clip``): each image is classified among one text per
  concept (the run's erased and retained concepts) plus "background" texts (the concepts'
  neutral prompts, e.g. "a photo of an object"), with CLIP's softmax over its scaled cosine
  logits; a concept counts when its probability reaches the confidence.

``eval.clip_model`` is a hub id or a local folder holding a CLIPModel and its CLIPProcessor
files; with ``model.local_files_only`` nothing is fetched. No CLIP weights exist in any
registry reachable from the project's machines (DESIGN.md section 6), so the tests build a
tiny random CLIPModel from a config and check only that the numbers are well formed. Without
torchvision, transformers falls back to its PIL image processor (same resize, crop and
normalisation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from PIL import Image
from torch import Tensor

from fade.errors import FadeError


def _pil(images: Tensor) -> list[Image.Image]:
    from fade.eval.detectors import _to_uint8_hwc

    return [Image.fromarray(array) for array in _to_uint8_hwc(images)]


class Clip:
    """A CLIPModel and its processor, loaded once; embeddings are L2-normalised."""

    def __init__(
        self,
        source: str,
        local_files_only: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.source = source
        try:
            self.processor = CLIPProcessor.from_pretrained(
                source, local_files_only=local_files_only
            )
            self.model = CLIPModel.from_pretrained(source, local_files_only=local_files_only)
        except Exception as exc:  # any failure to load a user-named model is reported as such
            why = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise FadeError(f"cannot load CLIP model {source} (eval.clip_model): {why}") from exc
        self.device = torch.device(device)
        self.model.eval().to(self.device)
        self.batch_size = batch_size
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)

    @torch.no_grad()
    def image_embeddings(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, D) unit vectors."""
        parts = []
        for chunk in images.split(self.batch_size):
            pixels = self.processor(images=_pil(chunk), return_tensors="pt")["pixel_values"]
            out = self.model.vision_model(pixel_values=pixels.to(self.device))
            parts.append(self.model.visual_projection(out.pooler_output).float().cpu())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> Tensor:
        """len(texts) x D unit vectors (texts truncated to the model's context length)."""
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.processor.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            out = self.model.text_model(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
            )
            parts.append(self.model.text_projection(out.pooler_output).float().cpu())
        return torch.nn.functional.normalize(torch.cat(parts), dim=-1)

    def score(self, images: Tensor, prompts: Sequence[str]) -> list[float]:
        """CLIP score of each image with its own prompt: 100 x max(cosine, 0)."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        unique = list(dict.fromkeys(prompts))
        texts = self.text_embeddings(unique)
        rows = texts[[unique.index(p) for p in prompts]]
        cosine = (self.image_embeddings(images) * rows).sum(-1)
        return (100 * cosine.clamp(min=0)).tolist()

    def probabilities(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        """(N, len(texts)) zero-shot softmax over CLIP's scaled cosine logits."""
        scale = self.model.logit_scale.exp().float().cpu()
        logits = scale * self.image_embeddings(images) @ self.text_embeddings(texts).T
        return logits.softmax(-1)


class ClipDetector:
    """Zero-shot concept detector: ``classes`` maps a concept name to its text; ``background``
    texts stand for "none of them" and are never reported."""

    name = "clip"
    default_confidence = 0.5

    def __init__(
        self, clip: Clip, classes: Mapping[str, str], background: Sequence[str] = ("a photo",)
    ) -> None:
        if not classes:
            raise FadeError("the CLIP detector needs at least one concept to look for")
        self.clip = clip
        self.classes = dict(classes)
        self.background = [t for t in dict.fromkeys(background) if t not in self.classes.values()]
        self.texts = [*self.classes.values(), *self.background]

    def found_concepts(
        self, images: Tensor, confidence: float = default_confidence
    ) -> list[set[str]]:
        probs = self.clip.probabilities(images, self.texts)[:, : len(self.classes)]
        names = list(self.classes)
        return [
            {name for name, p in zip(names, row, strict=True) if p >= confidence}
            for row in probs.tolist()
        ]
