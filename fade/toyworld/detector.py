"""The toy detector: one classifier head per category, each with a "none" class.

It is the concept detector for Acc, the attribute checker for prompt adherence and the feature
network for FD_toy. A concept counts as present only when its head is confident (probability
above `confidence`, 0.9 by default), so an erased circle that turned into a blob is not counted:
blobs, cut-off shapes and noise are trained as "none".

Trained on renders with augmentation that looks like generated images (blur, noise, small
colour shifts), so it judges the toy model's outputs the way it judges renders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from tqdm.auto import tqdm

from fade.toyworld.captions import labels_for
from fade.toyworld.data import make_scene_set
from fade.toyworld.spec import DetectorSchedule
from fade.toyworld.vocabulary import CATEGORIES

DETECTOR_DIR = Path(__file__).resolve().parent / "detector"
DEFAULT_CONFIDENCE = 0.9
NONE = "none"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class ToyDetector(nn.Module):
    """CNN trunk -> 256-d features -> a (K+1)-way head per category (last class = none)."""

    def __init__(self, categories: dict[str, tuple[str, ...]] | None = None, width: int = 32):
        super().__init__()
        self.categories = dict(categories or CATEGORIES)
        self.trunk = nn.Sequential(
            _block(3, width), _block(width, width * 2), _block(width * 2, width * 4)
        )
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(width * 4 * 16, 256), nn.ReLU())
        self.heads = nn.ModuleDict(
            {name: nn.Linear(256, len(names) + 1) for name, names in self.categories.items()}
        )

    def embed(self, images: Tensor) -> Tensor:
        """256-d features of (N, 3, 32, 32) images in [0, 1] (the FD_toy feature space)."""
        return self.features(self.trunk(images * 2 - 1))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.embed(images)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def probabilities(self, images: Tensor, batch_size: int = 512) -> dict[str, Tensor]:
        """Per-category class probabilities for images in [0, 1], (N, K+1) each."""
        self.eval()
        parts = [self(chunk) for chunk in images.split(batch_size)]
        return {name: torch.cat([F.softmax(p[name], -1) for p in parts]) for name in self.heads}

    def detect(
        self, images: Tensor, confidence: float = DEFAULT_CONFIDENCE
    ) -> dict[str, list[str | None]]:
        """Per category, the confidently seen concept of each image, or None."""
        out: dict[str, list[str | None]] = {}
        for name, probs in self.probabilities(images).items():
            best, index = probs.max(-1)
            names = (*self.categories[name], NONE)
            out[name] = [
                names[i] if p >= confidence and names[i] != NONE else None
                for p, i in zip(best.tolist(), index.tolist(), strict=True)
            ]
        return out

    def found_concepts(
        self, images: Tensor, confidence: float = DEFAULT_CONFIDENCE
    ) -> list[set[str]]:
        """The set of concepts confidently seen in each image (any category)."""
        detected = self.detect(images, confidence)
        return [
            {found[i] for found in detected.values() if found[i] is not None}
            for i in range(len(images))
        ]

    @torch.no_grad()
    def embeddings(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """FD_toy features: the 256-d penultimate layer."""
        self.eval()
        return torch.cat([self.embed(chunk) for chunk in images.split(batch_size)])

    def save(self, directory: Path, extra: dict | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_model(self, str(directory / "model.safetensors"))
        meta = {"categories": self.categories, "confidence": DEFAULT_CONFIDENCE, **(extra or {})}
        (directory / "config.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path = DETECTOR_DIR) -> ToyDetector:
        meta = json.loads((directory / "config.json").read_text())
        detector = cls({k: tuple(v) for k, v in meta["categories"].items()})
        load_model(detector, str(directory / "model.safetensors"))
        return detector.eval()


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Blur, noise and colour shifts of the size a small generator's outputs show."""
    n = images.shape[0]
    sigma = torch.rand(n, generator=generator) * 0.9
    kernel_x = torch.arange(-2, 3, dtype=torch.float32)
    weights = torch.exp(-(kernel_x[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    weights = weights / weights.sum(-1, keepdim=True)
    # One grouped convolution blurs every image with its own separable Gaussian kernel.
    channels = images.reshape(1, n * 3, *images.shape[2:])
    k = weights.repeat_interleave(3, dim=0).view(n * 3, 1, 1, 5)
    x = F.conv2d(F.pad(channels, (2, 2, 0, 0), mode="replicate"), k, groups=n * 3)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.transpose(2, 3), groups=n * 3)
    images = x.view_as(images)
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=generator) - 0.5) * 0.12
    noise = torch.randn(images.shape, generator=generator) * (
        torch.rand(n, 1, 1, 1, generator=generator) * 0.06
    )
    return (images * gain + noise).clamp(0, 1)


def _batch(count: int, seed: int, negative_rate: float) -> tuple[Tensor, dict[str, Tensor]]:
    data = make_scene_set(count, seed, negative_rate=negative_rate)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
    labels = [labels_for(scene) for scene in data.scenes]
    return images, {name: torch.tensor([lab[name] for lab in labels]) for name in CATEGORIES}


def train_detector(schedule: DetectorSchedule, seed: int) -> ToyDetector:
    """Train on freshly rendered batches (every batch is new data: no overfitting to renders)."""
    torch.manual_seed(seed)
    detector = ToyDetector()
    optimizer = torch.optim.AdamW(detector.parameters(), lr=schedule.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    progress = tqdm(range(schedule.steps), desc="toy detector")
    detector.train()
    for step in progress:
        images, labels = _batch(
            schedule.batch_size, seed * 1_000_003 + step, schedule.negative_rate
        )
        logits = detector(augment(images, generator))
        loss = sum(F.cross_entropy(logits[name], labels[name]) for name in CATEGORIES)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr * 0.5 * (1 + math.cos(math.pi * step / schedule.steps))
        if step % 20 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")
    return detector.eval()


def evaluate_detector(
    detector: ToyDetector,
    count: int = 4000,
    seed: int = 12345,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict:
    """Held-out accuracy per category (argmax) and worst false-positive rate per concept.

    A false positive is a concept confidently reported on an image that does not show it
    (negatives and images of other concepts of the same category).
    """
    images, labels = _batch(count, seed, negative_rate=0.25)
    generator = torch.Generator().manual_seed(seed)
    probs = detector.probabilities(augment(images, generator))
    report: dict = {"accuracy": {}, "max_false_positive": {}, "confidence": confidence}
    for name, p in probs.items():
        truth = labels[name]
        report["accuracy"][name] = float((p.argmax(-1) == truth).float().mean()) * 100
        confident = (p.max(-1).values >= confidence) & (p.argmax(-1) < len(CATEGORIES[name]))
        said = torch.where(confident, p.argmax(-1), torch.full_like(truth, -1))
        worst = 0.0
        for index in range(len(CATEGORIES[name])):
            absent = truth != index
            rate = float(((said == index) & absent).float().sum() / absent.sum().clamp_min(1))
            worst = max(worst, rate * 100)
        report["max_false_positive"][name] = worst
    return report


def images_to_unit(images: np.ndarray) -> Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
