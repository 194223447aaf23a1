"""The toy world's concepts: colours, textures, shapes, glyphs and artists, with their words.

Why data in code: the renderer, the caption sampler, the tokenizers, the detector's heads and
the toy catalog all read this one table, so a concept added here exists everywhere at once.
Every concept word (and synonym) is a single lower-case token. Categories mirror the erasure
benchmarks: shapes are objects, glyphs stand in for identities, artists for styles.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (228, 30, 36),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 30),
    "green": (30, 180, 60),
    "blue": (40, 80, 235),
    "purple": (135, 45, 205),
    "pink": (255, 125, 200),
    "cyan": (40, 220, 230),
    "white": (245, 245, 245),
    "brown": (135, 75, 25),
    "lime": (160, 230, 40),
    "teal": (0, 140, 125),
    "magenta": (215, 35, 215),
    "grey": (140, 140, 140),
}

TEXTURES = ("solid", "striped", "checkered", "dotted", "hatched", "banded")

SHAPES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "cross",
    "heart",
    "crescent",
    "arrow",
    "ring",
    "oval",
)

# 5x7 bitmaps of bold letters; '#' is ink. No "a": it is the article in every caption.
GLYPH_BITMAPS: dict[str, tuple[str, ...]] = {
    "b": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "c": (".####", "#....", "#....", "#....", "#....", "#....", ".####"),
    "d": ("####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."),
    "e": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "f": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "h": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "j": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "k": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "l": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "p": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "t": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "u": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "x": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
}
GLYPHS = tuple(GLYPH_BITMAPS)


@dataclass(frozen=True)
class Artist:
    """A named style: a background pattern in two colours and a foreground colour."""

    name: str
    pattern: str
    background: tuple[RGB, RGB]
    foreground: str  # a key of COLOURS


ARTISTS: tuple[Artist, ...] = (
    Artist("velmora", "diagonal", ((20, 40, 90), (60, 110, 170)), "yellow"),
    Artist("okafor", "rings", ((90, 20, 20), (170, 70, 40)), "white"),
    Artist("tanaka", "grid", ((235, 230, 210), (150, 140, 120)), "blue"),
    Artist("brandt", "checker", ((40, 70, 40), (90, 130, 70)), "orange"),
    Artist("quillon", "dots", ((60, 20, 80), (150, 90, 170)), "cyan"),
    Artist("marisol", "vertical", ((250, 200, 120), (220, 120, 60)), "purple"),
    Artist("ivanova", "gradient", ((10, 10, 40), (120, 150, 230)), "pink"),
    Artist("castell", "waves", ((20, 90, 100), (70, 170, 160)), "red"),
    Artist("nakamura", "rays", ((120, 100, 20), (210, 190, 80)), "green"),
    Artist("dubois", "frame", ((200, 200, 205), (60, 60, 70)), "brown"),
    Artist("oyelaran", "zigzag", ((100, 40, 10), (230, 160, 60)), "blue"),
    Artist("lindqvist", "bricks", ((160, 60, 50), (225, 205, 185)), "green"),
    Artist("moreau", "speckle", ((30, 30, 30), (150, 150, 150)), "yellow"),
    Artist("hollis", "horizontal", ((70, 40, 20), (200, 150, 90)), "cyan"),
    Artist("ferreira", "split", ((30, 60, 30), (200, 60, 90)), "white"),
)
ARTIST_NAMES = tuple(artist.name for artist in ARTISTS)
ARTISTS_BY_NAME = {artist.name: artist for artist in ARTISTS}

# Category -> concept names, in detector-head order (each head adds a final "none" class).
CATEGORIES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "glyph": GLYPHS,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "artist": ARTIST_NAMES,
}

# Benchmark-style category names used by the catalog (objects, identities, styles).
CATALOG_CATEGORY = {
    "shape": "object",
    "glyph": "identity",
    "colour": "colour",
    "texture": "texture",
    "artist": "style",
}

# One-word synonyms the captions use at random, so generality can be measured.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("disc",),
    "square": ("box",),
    "diamond": ("rhombus",),
    "cross": ("plus",),
    "crescent": ("moon",),
    "oval": ("ellipse",),
    "red": ("crimson",),
    "blue": ("azure",),
    "green": ("emerald",),
    "purple": ("violet",),
    "striped": ("stripy",),
    "dotted": ("spotted",),
    "checkered": ("checked",),
}

# Words that build captions around the concepts; the neutral anchors are among them.
FUNCTION_WORDS = ("a", "the", "letter", "by", "shape", "picture")
SHAPE_ANCHOR = "shape"  # "a red shape": some shape, none in particular
GLYPH_ANCHOR = "letter"  # "the letter": some letter, none in particular


def category_of(concept: str) -> str:
    """The category a concept word or synonym belongs to."""
    canonical = canonical_name(concept)
    for category, names in CATEGORIES.items():
        if canonical in names:
            return category
    raise KeyError(concept)


def canonical_name(word: str) -> str:
    """The concept a synonym stands for (a concept name maps to itself)."""
    for name, synonyms in SYNONYMS.items():
        if word in synonyms:
            return name
    return word


def vocabulary() -> list[str]:
    """Every word a toy caption can contain: the tokenizers' vocabulary."""
    words = list(FUNCTION_WORDS)
    for names in CATEGORIES.values():
        words.extend(names)
    for synonyms in SYNONYMS.values():
        words.extend(synonyms)
    return list(dict.fromkeys(words))


def concept_count() -> int:
    return sum(len(names) for names in CATEGORIES.values())


def prompt_attributes(prompt: str) -> set[str]:
    """The concepts a toy prompt asks for ("a crimson circle by velmora" -> red, circle, velmora).

    Anchor and function words name no concept; synonyms count as their concept.
    """
    known = {name for names in CATEGORIES.values() for name in names}
    words = (canonical_name(word) for word in prompt.lower().split())
    return {word for word in words if word in known}
