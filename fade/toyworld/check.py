"""Does the toy model know its concepts? Generate per concept, ask the detector.

Before erasure the base model must show its concepts (high base Acc), or erasure numbers mean
nothing; this is that check, used by the build (docs/toyworld.md numbers) and by a CI test on a
small sample.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from fade.backbones import Backbone
from fade.eval.sampling import generate
from fade.toyworld.catalog import TEMPLATES
from fade.toyworld.detector import DEFAULT_CONFIDENCE, ToyDetector
from fade.toyworld.vocabulary import ARTIST_NAMES, CATEGORIES, SYNONYMS, category_of


@dataclass
class ConceptRate:
    concept: str
    category: str
    word: str  # the word prompted (the concept or a synonym)
    rate: float  # % of images where the detector confidently finds the concept
    #: caption template -> (images where the concept was found, images generated with it)
    by_caption: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: what the detector confidently called the images (a concept of the category, or "none"
    #: when it was sure of nothing): a miss drawn as a neighbour differs from a blob
    calls: dict[str, int] = field(default_factory=dict)


def templates_for(category: str, count: int) -> list[str]:
    """`count` caption templates of the category, cycling through them in order."""
    templates = TEMPLATES[category]
    return [templates[i % len(templates)] for i in range(count)]


def prompts_for(word: str, category: str, count: int) -> list[str]:
    return [template.format(word) for template in templates_for(category, count)]


def concept_rate(
    backbone: Backbone,
    detector: ToyDetector,
    concept: str,
    word: str | None = None,
    count: int = 64,
    guidance_scale: float = 3.5,
    num_steps: int = 20,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> ConceptRate:
    """Share of `count` generations for `word` (default: the concept) that show the concept,
    also split by caption template: the prompts cycle through the templates, so the split comes
    from the same images at no extra cost."""
    category = category_of(concept)
    word = word or concept
    templates = templates_for(category, count)
    images = generate(
        backbone,
        [template.format(word) for template in templates],
        seed=seed,
        num_steps=num_steps,
        guidance_scale=guidance_scale,
    )
    answers = detector.detect(images, confidence)[category]
    found = [answer == concept for answer in answers]
    totals, hits = (
        Counter(templates),
        Counter(t for t, ok in zip(templates, found, strict=True) if ok),
    )
    by_caption = {template: (hits[template], total) for template, total in totals.items()}
    calls = Counter(answer or "none" for answer in answers)
    rate = 100.0 * sum(found) / count
    return ConceptRate(concept, category, word, rate, by_caption, dict(calls.most_common()))


def caption_rates(rows: list[ConceptRate]) -> dict[str, dict[str, float]]:
    """Per category and caption template, the share of the concepts' own generations (not their
    synonyms') that show the asked concept: where in the captions the model misses."""
    pooled: dict[str, dict[str, list[int]]] = {}
    for row in rows:
        if row.word != row.concept:
            continue
        for template, (hits, total) in row.by_caption.items():
            counts = pooled.setdefault(row.category, {}).setdefault(template, [0, 0])
            counts[0] += hits
            counts[1] += total
    return {
        category: {template: 100.0 * hits / total for template, (hits, total) in by.items()}
        for category, by in pooled.items()
    }


def rate_without_artists(row: ConceptRate) -> float | None:
    """The rate on the captions that name no artist (None if every caption names one): how well
    the model draws the concept without an artist's patterned background."""
    plain = [
        counts
        for template, counts in row.by_caption.items()
        if not any(f"by {name}" in template.format(row.word) for name in ARTIST_NAMES)
    ]
    if not plain:
        return None
    return 100.0 * sum(hits for hits, _ in plain) / sum(total for _, total in plain)


def knowledge_report(
    backbone: Backbone,
    detector: ToyDetector,
    count: int = 64,
    guidance_scale: float = 3.5,
    num_steps: int = 20,
) -> dict:
    """Rates for every concept and synonym; means per category (the build's quality gate); per
    category and caption template (`per_caption`); what each concept's images were called
    (`calls`); and each concept's rate on the captions that name no artist."""
    words = [
        (concept, word)
        for names in CATEGORIES.values()
        for concept in names
        for word in (concept, *SYNONYMS.get(concept, ()))
    ]
    rows = [
        concept_rate(
            backbone,
            detector,
            concept,
            word,
            count=count,
            guidance_scale=guidance_scale,
            num_steps=num_steps,
        )
        for concept, word in tqdm(words, desc=f"check: {count} images per prompt")
    ]
    by_concept = {r.concept: r.rate for r in rows if r.word == r.concept}
    means = {
        category: sum(by_concept[c] for c in names) / len(names)
        for category, names in CATEGORIES.items()
    }
    synonyms = {
        r.word: {
            "concept": r.concept,
            "rate": r.rate,
            "relative": r.rate / by_concept[r.concept] if by_concept[r.concept] else 0.0,
        }
        for r in rows
        if r.word != r.concept
    }
    return {
        "per_concept": by_concept,
        "category_mean": means,
        "synonyms": synonyms,
        "per_caption": caption_rates(rows),
        "calls": {r.concept: r.calls for r in rows if r.word == r.concept},
        "per_concept_without_artists": {
            r.concept: rate_without_artists(r)
            for r in rows
            if r.word == r.concept and r.category != "artist"
        },
        "count": count,
        "guidance_scale": guidance_scale,
        "num_steps": num_steps,
    }
