"""Sample toy-world scenes with their captions (for the model) and labels (for the detector).

The caption grammar is small and regular: "a red striped circle", "a crimson circle",
"the letter k", "a blue letter k", "a circle by velmora", "the letter k by velmora", with the
neutral anchors "a red shape" and "the letter" mixed in so that a prompt with its concept
replaced by the anchor still means something to the model. Synonyms replace their concept at
random so that generality can be measured after erasure.
"""

from __future__ import annotations

import numpy as np

from fade.toyworld.render import Scene
from fade.toyworld.vocabulary import (
    ARTISTS,
    CATEGORIES,
    COLOURS,
    GLYPH_ANCHOR,
    GLYPHS,
    SHAPE_ANCHOR,
    SHAPES,
    SYNONYMS,
    TEXTURES,
)

FIGURE_KINDS = ("shape", "glyph", "artist")
FIGURE_WEIGHTS = (0.35, 0.25, 0.40)
NEGATIVE_KINDS = ("blob", "partial", "noise")


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _placement(rng: np.random.Generator, glyph: bool) -> dict[str, float]:
    low, high = (0.62, 0.78) if glyph else (0.55, 0.78)
    return {
        "cx": float(rng.uniform(-0.15, 0.15)),
        "cy": float(rng.uniform(-0.12, 0.12)),
        "scale": float(rng.uniform(low, high)),
    }


def sample_scene(
    rng: np.random.Generator,
    kind: str | None = None,
    weights: tuple[float, float, float] = FIGURE_WEIGHTS,
) -> Scene:
    """A random scene of `kind` ("shape", "glyph", "artist"; drawn by `weights` if None)."""
    kind = kind or str(rng.choice(FIGURE_KINDS, p=weights))
    seed = int(rng.integers(2**31))
    if kind == "shape":
        return Scene(
            "shape",
            shape=_pick(rng, SHAPES),
            colour=_pick(rng, tuple(COLOURS)),
            texture=_pick(rng, TEXTURES),
            seed=seed,
            **_placement(rng, glyph=False),
        )
    if kind == "glyph":
        return Scene(
            "glyph",
            glyph=_pick(rng, GLYPHS),
            colour=_pick(rng, tuple(COLOURS)),
            texture="solid",
            seed=seed,
            **_placement(rng, glyph=True),
        )
    if kind == "artist":
        artist = ARTISTS[int(rng.integers(len(ARTISTS)))]
        as_glyph = rng.random() < 0.4
        return Scene(
            "glyph" if as_glyph else "shape",
            shape=None if as_glyph else _pick(rng, SHAPES),
            glyph=_pick(rng, GLYPHS) if as_glyph else None,
            colour=artist.foreground,
            texture="solid",
            artist=artist.name,
            seed=seed,
            **_placement(rng, glyph=as_glyph),
        )
    raise ValueError(f"unknown scene kind {kind!r}")


def sample_negative(rng: np.random.Generator) -> Scene:
    """A scene that shows no shape and no glyph: a blob, a cut-off shape, or noise."""
    kind = _pick(rng, NEGATIVE_KINDS)
    artist = ARTISTS[int(rng.integers(len(ARTISTS)))].name if rng.random() < 0.3 else None
    return Scene(
        kind,
        shape=_pick(rng, SHAPES),
        colour=_pick(rng, tuple(COLOURS)),
        texture=_pick(rng, TEXTURES),
        artist=artist if kind != "noise" else None,
        seed=int(rng.integers(2**31)),
        **_placement(rng, glyph=False),
    )


def _word(name: str, rng: np.random.Generator, synonym_rate: float) -> str:
    synonyms = SYNONYMS.get(name, ())
    return _pick(rng, synonyms) if synonyms and rng.random() < synonym_rate else name


def caption_for(
    scene: Scene,
    rng: np.random.Generator,
    synonym_rate: float = 0.25,
    anchor_rate: float = 0.05,
) -> str:
    """A caption that is true of the scene (it may leave attributes out, never gets one wrong)."""
    words = ["a"]
    if scene.figure == "shape":
        if not scene.artist and rng.random() < 0.75:
            words.append(_word(scene.colour, rng, synonym_rate))
        if not scene.artist and rng.random() < 0.6:
            words.append(_word(scene.texture, rng, synonym_rate))
        words.append(
            SHAPE_ANCHOR if rng.random() < anchor_rate else _word(scene.shape, rng, synonym_rate)
        )
    elif scene.figure == "glyph":
        if not scene.artist and rng.random() < 0.5:
            words += [_word(scene.colour, rng, synonym_rate), "letter"]
        else:
            words = ["the", "letter"]
        if rng.random() >= anchor_rate:
            words.append(scene.glyph)
        elif words[-1] != GLYPH_ANCHOR:
            words.append(GLYPH_ANCHOR)
    else:
        raise ValueError(f"a {scene.figure!r} scene has no caption")
    if scene.artist:
        words += ["by", scene.artist]
    return " ".join(words)


def labels_for(scene: Scene) -> dict[str, int]:
    """Detector targets: per category, the concept's index, or len(names) for "none"."""
    values = {
        "shape": scene.shape if scene.figure == "shape" else None,
        "glyph": scene.glyph if scene.figure == "glyph" else None,
        "colour": scene.colour if scene.figure != "noise" else None,
        "texture": scene.texture if scene.figure != "noise" else None,
        "artist": scene.artist,
    }
    return {
        category: (CATEGORIES[category].index(value) if value else len(CATEGORIES[category]))
        for category, value in values.items()
    }
