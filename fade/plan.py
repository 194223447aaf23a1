"""Resolve what a run will do from its config: the concepts, their prompt sets, a summary.

Why apart from the entry points: erase, evaluate, tune and serve all turn `concepts.*` settings
into the same concept specs and prompt sets, with the same errors for an unknown concept, an
empty list or a surrogate equal to its concept, before any model is loaded or Ray is started.
"""

from __future__ import annotations

from dataclasses import dataclass

from fade.catalog import Catalog, list_catalogs, load_catalog
from fade.concepts import (
    ConceptError,
    ConceptSpec,
    PromptSets,
    build_prompt_sets,
    neighbour_rows,
    with_anchor,
)
from fade.concepts import with_surrogate as replace_surrogate
from fade.config import FadeConfig, config_hash, config_to_dict
from fade.recipes import resolve_config

# The concept erased when none is named and the model is the embedded toy world.
DEFAULT_TOY_CONCEPT = "diamond"


@dataclass
class RunPlan:
    """The resolved inputs of a run, before any model is loaded."""

    config: FadeConfig
    catalog: Catalog
    concepts: list[ConceptSpec]
    prompts: PromptSets

    def manifest_head(self) -> dict:
        """What every run directory's manifest.json starts with: the model, the concepts, the
        full (resolved) config and its hash, the seed."""
        cfg = self.config
        return {
            "model": {
                "path": cfg.model.path,
                "revision": cfg.model.revision,
                "family": cfg.model.family,
            },
            "concepts": [spec.to_dict() for spec in self.concepts],
            "catalog": self.catalog.name,
            "config": config_to_dict(cfg),
            "config_hash": config_hash(cfg),
            "seed": cfg.seed,
        }

    def _paired_held(self) -> str:
        erase = self.config.erase
        return _paired_description(
            # The loop adds the paired term inside L_pres: nothing is held when λ = 0.
            bool(erase.lam and erase.paired_preservation),
            erase.paired_prompts or "retain",
            len(self.prompts.retain),
            self.prompts.contrast,
        )

    def summary(self, examples: int = 2) -> str:
        """A short human-readable description (what `jobs/erase.py --dry-run` prints)."""
        cfg, erase = self.config, self.config.erase
        evaluation = f"{cfg.eval.detector} detector" if cfg.eval.enabled else "off (--no-eval)"
        lines = [
            f"model        {cfg.model.path} (family {cfg.model.family}, {cfg.model.dtype})",
            f"catalog      {self.catalog.name}",
            f"concepts     {', '.join(spec.name for spec in self.concepts)}",
            f"surrogates   {', '.join(s.surrogate or '-' for s in self.concepts)}",
            f"prompts      {len(self.prompts.target)} target, {len(self.prompts.neutral)} neutral, "
            f"{len(self.prompts.surrogate)} surrogate, {len(self.prompts.synonyms)} synonym, "
            f"{len(self.prompts.retain)} retain",
            f"recipe       {erase.recipe}",
            f"objective    w_rem={erase.w_rem} lam={erase.lam} w_dist={erase.w_dist} t0={erase.t0} "
            f"eta={erase.negative_guidance} balance={erase.balance} "
            f"paired_preservation={self._paired_held()}",
            f"adapter      {erase.candidates} projections, sparsity={erase.sparsity} "
            f"({'saliency over neighbours' if erase.saliency_contrast else 'saliency alone'}) "
            f"rank={erase.lora_rank} steps={erase.steps}",
            f"distributed  {cfg.distributed.strategy} x {cfg.distributed.num_workers} workers",
            f"evaluation   {evaluation}",
            f"output       {cfg.output.dir}",
            f"config hash  {config_hash(cfg)}",
        ]
        for target, neutral in list(zip(self.prompts.target, self.prompts.neutral, strict=True))[
            :examples
        ]:
            lines.append(f"example      {target!r} -> {neutral!r}")
        return "\n".join(lines)


def _paired_description(enabled: bool, mode: str, retain: int, contrast: list[str]) -> str:
    """What paired preservation will hold, as the erasure loop decides it (fade/erase.py)."""
    if not enabled:
        return "off"
    neighbours = neighbour_rows(contrast, mode)
    rest = "retain prompts" if retain else "their neutral prompts"
    if mode == "neighbours" and neighbours and neighbours == len(contrast):
        return "on (neighbours)"
    if neighbours:
        return f"on (neighbours for {neighbours} of {len(contrast)} rows, {rest} for the rest)"
    if not retain:
        return "off (no retain prompts and no neighbours to hold)"
    if mode == "neighbours":
        return "on (retain prompts: the catalog has no same-category neighbours)"
    return "on (retain prompts)"


def resolve_concepts(cfg: FadeConfig) -> tuple[Catalog, list[ConceptSpec]]:
    """Catalog plus the concept specs named by `concepts.names` / `concepts.concept_set`."""
    settings = cfg.concepts
    if settings.concept_set and settings.names:
        raise ConceptError("give either concepts.names or concepts.concept_set, not both")
    if settings.concept_set:
        catalog, specs = _from_concept_set(settings.concept_set, settings.catalog)
    else:
        catalog = load_catalog(settings.catalog)
        names = settings.names
        if names is None and cfg.model.path == "toy":
            names = [DEFAULT_TOY_CONCEPT]
        if not names:
            given = "the concept list is empty" if names is not None else "no concepts given"
            raise ConceptError(f"{given}: pass --concepts NAME[,NAME...] or --concept-set SET")
        specs = catalog.select(names)
    if settings.anchor is not None:
        specs = [with_anchor(spec, settings.anchor) for spec in specs]
    if settings.surrogate is not None:
        if len(specs) != 1:
            raise ConceptError(
                f"concepts.surrogate applies to one concept, got {len(specs)}: "
                "give surrogates per concept in a catalog file instead"
            )
        specs = [replace_surrogate(specs[0], settings.surrogate)]
    return catalog, specs


def _from_concept_set(concept_set: str, catalog_name: str) -> tuple[Catalog, list[ConceptSpec]]:
    """`CATALOG:SET`, a whole catalog (built-in name or file), or a set of `concepts.catalog`."""
    if ":" in concept_set and not concept_set.endswith((".yaml", ".yml", ".json")):
        catalog_part, set_name = concept_set.split(":", 1)
        catalog = load_catalog(catalog_part)
        return catalog, catalog.set(set_name)
    if concept_set in list_catalogs() or concept_set.endswith((".yaml", ".yml", ".json")):
        catalog = load_catalog(concept_set)
        return catalog, catalog.set("all")
    catalog = load_catalog(catalog_name)
    return catalog, catalog.set(concept_set)


def check_toy_vocabulary(specs: list[ConceptSpec]) -> None:
    """The toy model only knows its own words: refuse a concept it has never seen."""
    from fade.toyworld.vocabulary import vocabulary

    known = set(vocabulary())
    for spec in specs:
        for term in (*spec.terms, *([spec.surrogate] if spec.surrogate else [])):
            unknown = [word for word in term.lower().split() if word not in known]
            if unknown:
                raise ConceptError(
                    f"concept {spec.name!r}: the toy model's vocabulary has no word "
                    f"{unknown[0]!r} (see docs/toyworld.md for its concepts)"
                )


def make_plan(cfg: FadeConfig) -> RunPlan:
    """Resolve concepts, fill unset settings from the recipe (fade/recipes.py) and build the
    prompt sets; raises a one-line FadeError on bad input. `plan.config` is what runs."""
    catalog, specs = resolve_concepts(cfg)
    if cfg.model.path == "toy":
        check_toy_vocabulary(specs)
    has_surrogate = any(spec.surrogate for spec in specs)
    cfg = resolve_config(cfg, has_surrogate, concepts=len(specs))
    prompts = build_prompt_sets(
        specs,
        catalog,
        n_per_concept=cfg.concepts.prompts_per_concept,
        n_retain=cfg.concepts.retain_prompts,
        seed=cfg.seed,
        neighbour_share=cfg.concepts.neighbour_share,
    )
    return RunPlan(cfg, catalog, specs, prompts)
