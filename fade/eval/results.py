"""Write an evaluation into a run directory: metrics.json, metrics.parquet and report.html.

metrics.json is the nested record (docs/evaluation.md); metrics.parquet holds the same numbers
as a table, one row per (concept, prompt set, model state), for loading many runs at once
(`pyarrow.dataset`, pandas, DuckDB). Every row carries the run's facts (model id and revision,
concepts, config hash, seed) and how it was measured (detector, sample count), as DESIGN.md
section 3 requires, so rows from different runs can be mixed without losing where they came
from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fade.eval.metrics import score_value
from fade.eval.report import write_report

METRICS_JSON = "metrics.json"
METRICS_PARQUET = "metrics.parquet"
REPORT_HTML = "report.html"
STATES = ("before", "after")

SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("model_revision", pa.string()),
        ("concepts", pa.list_(pa.string())),
        ("config_hash", pa.string()),
        ("seed", pa.int64()),
        ("concept", pa.string()),  # the concept the prompts ask for; null for neutral prompts
        ("prompt_set", pa.string()),  # target, synonyms, retained, neutral
        ("state", pa.string()),  # before (base model) or after (with the adapter)
        ("acc", pa.float64()),  # % of images in which the detector finds `concept`
        ("adherence", pa.float64()),  # % of the prompt's concepts found (toy CLIP stand-in)
        ("clip_score", pa.float64()),  # mean CLIP score x100 with the prompt (real models)
        ("fd", pa.float64()),  # Fréchet distance of the neutral images (neutral rows only)
        ("surrogate_rate", pa.float64()),  # % showing the surrogate (the target's rows only)
        ("samples", pa.int64()),  # images behind acc (and fd on neutral rows)
        ("adherence_samples", pa.int64()),  # images behind adherence or clip_score
        ("detector", pa.string()),
        ("confidence", pa.float64()),
        ("fidelity_metric", pa.string()),  # FD_toy or FID (neutral rows)
        ("features", pa.string()),  # the feature network behind fd
        ("alignment_metric", pa.string()),  # adherence or CLIP
    ]
)


@dataclass
class RunFacts:
    """What every result row is stamped with."""

    model_id: str
    model_revision: str | None
    concepts: list[str]
    config_hash: str
    seed: int


def metrics_rows(metrics: dict, facts: RunFacts) -> list[dict]:
    """The Parquet rows of a metrics.json mapping: one per (concept, prompt set, model state)."""
    base = {
        "model_id": facts.model_id,
        "model_revision": facts.model_revision,
        "concepts": list(facts.concepts),
        "config_hash": facts.config_hash,
        "seed": facts.seed,
        "detector": metrics.get("detector"),
    }
    alignment = metrics.get("alignment") or {}
    # The alignment column (and per-concept key): adherence on the toy world, else CLIP score.
    column = "clip_score" if alignment.get("metric") == "CLIP" else "adherence"
    fidelity = metrics.get("fidelity") or {}
    surrogate = metrics.get("surrogate") or {}
    rows = []
    for concept, entry in (metrics.get("per_concept") or {}).items():
        for prompt_set, acc in entry.get("acc", {}).items():
            adherence = entry.get(column, {}).get(prompt_set, {})  # same key in metrics.json
            for state in STATES:
                row = {
                    **base,
                    "concept": concept,
                    "prompt_set": prompt_set,
                    "state": state,
                    "acc": acc.get(state),
                    column: adherence.get(state),
                    "samples": acc.get("samples"),
                    "adherence_samples": adherence.get("samples"),
                    "confidence": acc.get("confidence"),
                    "alignment_metric": alignment.get("metric") if adherence else None,
                }
                if surrogate and prompt_set == "target" and len(facts.concepts) == 1:
                    row["surrogate_rate"] = surrogate.get(state)
                rows.append(row)
    neutral = alignment.get("per_set", {}).get("neutral", {})
    count = (metrics.get("samples") or {}).get("neutral")
    if count:
        for state in STATES:
            rows.append(
                {
                    **base,
                    "concept": None,
                    "prompt_set": "neutral",
                    "state": state,
                    column: neutral.get(state),
                    "adherence_samples": neutral.get("samples"),
                    "fd": fidelity.get(state),
                    "samples": count,
                    "fidelity_metric": fidelity.get("metric"),
                    "features": fidelity.get("features"),
                    "alignment_metric": alignment.get("metric") if neutral else None,
                }
            )
    return rows


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """Write rows with :data:`SCHEMA` (missing columns are null)."""
    columns = {name: [row.get(name) for row in rows] for name in SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def _write_json(path: Path, data: dict) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_results(
    run_dir: Path, metrics: dict, grids: list, facts: RunFacts, manifest: dict | None = None
) -> dict[str, Path]:
    """Write (or rewrite) metrics.json, metrics.parquet and report.html in `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return {
        "json": _write_json(run_dir / METRICS_JSON, metrics),
        "parquet": write_parquet(run_dir / METRICS_PARQUET, metrics_rows(metrics, facts)),
        "report": write_report(run_dir, metrics, grids, manifest),
    }


def facts_from_manifest(manifest: dict, config_hash: str | None = None) -> RunFacts:
    """RunFacts of a run directory's manifest (`config_hash` overrides the manifest's)."""
    model = manifest.get("model") or {}
    names = [c.get("name") if isinstance(c, dict) else str(c) for c in manifest.get("concepts", [])]
    return RunFacts(
        model_id=str(model.get("path") or model.get("id")),
        model_revision=model.get("revision"),
        concepts=names,
        config_hash=config_hash or manifest.get("config_hash", ""),
        seed=int(manifest.get("seed", 0)),
    )


def metrics_table(metrics: dict) -> list[str]:
    """Before/after lines for the Acc, surrogate, fidelity and alignment entries, then scores."""
    lines = [f"{'':12} {'before':>8} {'after':>8}"]
    for group, values in metrics.get("acc", {}).items():
        lines.append(f"Acc {group:8} {_num(values['before'], 1)} {_num(values['after'], 1)}")
    if "surrogate" in metrics:
        sur = metrics["surrogate"]
        name = f"shows {sur['concept']}"
        lines.append(f"{name:12} {_num(sur['before'], 1)} {_num(sur['after'], 1)}")
    for key in ("fidelity", "alignment"):
        if values := metrics.get(key):
            lines.append(
                f"{values['metric']:12} {_num(values['before'], 2)} {_num(values['after'], 2)}"
            )
    for key in ("H", "H_o", "H_c", "H_a"):
        if (value := score_value(metrics, key)) is not None:
            lines.append(f"{key:12} {'':8} {value:8.1f}")
    for key, why in metrics.get("not_measured", {}).items():
        lines.append(f"{key:12} not measured: {why}")
    return lines


def _num(value: float | None, digits: int) -> str:
    return f"{value:8.{digits}f}" if isinstance(value, int | float) else f"{'-':>8}"
