"""The HTML report of an erasure run: a summary table and before/after image grids.

`write_report` leaves `run_dir/report.html` and its PNGs in `run_dir/report/`, linked by relative
paths, so the pair can be copied, zipped or served from anywhere. The page is self-contained
(inline CSS, no scripts, no network fonts) because the people reading it are often offline or
behind a proxy. Every number names how it was measured (detector or feature network, samples),
as DESIGN.md section 3 requires, and every piece of text is escaped: concept names and prompts
come from user catalogs.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fade.eval.grids import _to_uint8

#: Target on-screen size of one generated image: 32x32 toy images are unreadable at 1:1.
CELL_PIXELS = 96

# (key in metrics["acc"], row label, True when lower is better after erasure)
ACC_ROWS = [
    ("target", "Acc on target prompts (erasure)", True),
    ("synonyms", "Acc on synonym prompts (generality)", True),
    ("retained", "Acc on retained concepts (specificity)", False),
]
# What each fidelity/alignment metric is computed on, when metrics.json does not say.
FEATURES = {
    "FD_toy": "toy classifier features",
    "FID": "Inception features",
    "adherence": "toy classifier attributes",
    "CLIP": "CLIP image-text similarity",
}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1320px;padding:0 1rem;color:#1d2430;background:#fff;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:2px solid #dde3ea;
padding-bottom:.2rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;margin:.6rem 0}th,td{padding:.35rem .7rem;text-align:left;
border-bottom:1px solid #e4e8ee}th{background:#f3f5f8}td.num{text-align:right;
font-variant-numeric:tabular-nums}.good{color:#1a7f37}.bad{color:#c62828}
.muted{color:#5b6573;font-size:.9rem}.scores{display:flex;gap:1rem;flex-wrap:wrap}
.score{background:#f3f5f8;border-radius:8px;padding:.6rem 1rem;max-width:260px}
.score .muted{display:block;font-size:.75rem}
.score b{font-size:1.5rem;display:block}.pair{display:flex;gap:1.5rem;flex-wrap:wrap}
figure{margin:0}
figcaption{font-size:.85rem;color:#5b6573}img{image-rendering:pixelated;max-width:100%;
height:auto;border:1px solid #dde3ea}
"""


@dataclass
class ConceptGrid:
    """One concept's images: rows of (label, before, after), both (N, 3, H, W) in [0, 1].

    Row i of `before` and `after` must come from the same noise seeds, so that any difference
    on the page is the adapter's doing.
    """

    concept: str
    rows: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)


def _fmt(value: object, sign: bool = False) -> str:
    """Numbers at a precision a reader can compare; small values (FD) keep 3 significant
    digits so that 0.012 does not print as 0.0."""
    if not isinstance(value, int | float):
        return html.escape(str(value))
    if isinstance(value, int) and not sign:
        return str(value)
    if value == 0 or abs(value) >= 1:
        return f"{value:+.1f}" if sign else f"{value:.1f}"
    return f"{value:+.3g}" if sign else f"{value:.3g}"


def _slug(text: str) -> str:
    """A file-name-safe form of a concept name (names may hold spaces, slashes or markup)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:40] or "concept"


def _strip(images: torch.Tensor | np.ndarray, gap: int = 2) -> Image.Image:
    """The N images side by side, upscaled with nearest-neighbour so pixels stay crisp."""
    arrays = _to_uint8(images)
    height, width = arrays.shape[1:3]
    scale = max(1, round(CELL_PIXELS / height))
    cell_w = width * scale + gap
    sheet = Image.new("RGB", (len(arrays) * cell_w - gap, height * scale), "white")
    for column, image in enumerate(arrays):
        tile = Image.fromarray(image).resize((width * scale, height * scale), Image.NEAREST)
        sheet.paste(tile, (column * cell_w, 0))
    return sheet


def _change_cell(before: object, after: object, lower_better: bool | None) -> str:
    """after - before, coloured by whether it moved the way erasure wants."""
    if not isinstance(before, int | float) or not isinstance(after, int | float):
        return '<td class="num">–</td>'
    delta = after - before
    css = ""
    if lower_better is not None and delta != 0:
        css = " good" if (delta < 0) == lower_better else " bad"
    return f'<td class="num{css}">{_fmt(delta, sign=True)}</td>'


def _row(name: str, entry: dict, lower_better: bool | None, *extra: str) -> str:
    """One before/after/change row; `extra` cells (measuring tool, samples) are pre-rendered."""
    before, after = entry.get("before"), entry.get("after")
    cells = [
        f"<td>{html.escape(name)}</td>",
        f'<td class="num">{_fmt(before) if before is not None else "–"}</td>',
        f'<td class="num">{_fmt(after) if after is not None else "–"}</td>',
        _change_cell(before, after, lower_better),
        *extra,
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _info(how: str, samples: object) -> tuple[str, str]:
    """The cells that make a number checkable: what measured it and on how many images."""
    count = _fmt(samples) if samples is not None else "–"
    return f"<td>{html.escape(how)}</td>", f'<td class="num">{count}</td>'


def _how(entry: dict, fallback: str) -> str:
    """The detector named on the entry itself (metrics.json since per-metric provenance), or
    the run-wide one."""
    return f"detector: {entry['detector']}" if entry.get("detector") else fallback


def _summary(metrics: dict) -> str:
    """The table of every before/after pair present in metrics.json, with its measuring tool."""
    samples = metrics.get("samples") or {}
    detector = f"detector: {metrics['detector']}" if metrics.get("detector") else "detector"
    rows, acc = [], metrics.get("acc") or {}
    for key, label, lower in ACC_ROWS:
        if entry := acc.get(key):
            count = entry.get("samples", samples.get(key))
            rows.append(_row(label + " %", entry, lower, *_info(_how(entry, detector), count)))
    # FD is computed on the neutral images, adherence on retained + neutral (fade.eval.summary).
    sets = {"fidelity": ["neutral"], "alignment": ["retained", "neutral"]}
    for key, lower in (("fidelity", True), ("alignment", False)):
        entry = metrics.get(key)
        if not entry:
            continue
        name = str(entry.get("metric", key))
        how = f"{name} on {entry.get('features') or FEATURES.get(name, 'its own features')}"
        if name == "CLIP" and entry.get("detector"):  # which CLIP model
            how += f" ({entry['detector']})"
        if entry.get("reference"):
            how += f" vs {entry['reference']}"
        parts = [samples.get(s) for s in sets[key]]
        count = entry.get("samples", samples.get(key, None if None in parts else sum(parts)))
        rows.append(_row(f"{key.capitalize()}: {name}", entry, lower, *_info(how, count)))
        for group, sub in (entry.get("per_set") or {}).items():
            how = f"{name} on {entry.get('features') or FEATURES.get(name, 'its own features')}"
            label = f"{name} on {group} prompts"
            lower_sub = group in ("target", "synonyms") or lower
            rows.append(_row(label, sub, lower_sub, *_info(how, sub.get("samples"))))
    if surrogate := metrics.get("surrogate"):
        label = f"Surrogate '{surrogate.get('concept', '?')}' shown on target prompts %"
        count = surrogate.get("samples", samples.get("surrogate", samples.get("target")))
        rows.append(_row(label, surrogate, False, *_info(_how(surrogate, detector), count)))
    head = "<tr><th>metric</th><th>before</th><th>after</th><th>change</th><th>measured with</th>"
    missing = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
        for k, v in (metrics.get("not_measured") or {}).items()
    )
    if missing:
        missing = f'<p class="muted">Not measured:</p><ul class="muted">{missing}</ul>'
    return f"<table>{head}<th>samples</th></tr>{''.join(rows)}</table>{missing}"


def _scores(metrics: dict) -> str:
    """H and MACE's variants (H_o, H_c, H_a) as headline numbers: they have no 'before'.
    Each is a bare number; its definition, if known, is in metrics["scores"][key]."""
    cards = []
    provenance = metrics.get("scores", {})
    for key, value in metrics.items():
        if not re.fullmatch(r"H(_\w+)?", key) or not isinstance(value, int | float):
            continue
        note = provenance.get(key, {}).get("definition", "")
        caption = f'<span class="muted">{html.escape(note)}</span>' if note else ""
        cards.append(
            f'<div class="score" title="{html.escape(note)}">{html.escape(key)}'
            f"<b>{_fmt(value)}</b>{caption}</div>"
        )
    return f'<div class="scores">{"".join(cards)}</div>' if cards else ""


def _manifest(manifest: dict | None) -> str:
    """Which model, concepts and config produced the numbers: a report must be traceable."""
    if not manifest:
        return ""
    items = []
    model = manifest.get("model")
    if isinstance(model, dict):
        name = model.get("id") or model.get("path")
        model = " @ ".join(str(v) for v in (name, model.get("revision")) if v)
    if model:
        items.append(("model", str(model)))
    if concepts := manifest.get("concepts"):
        names = [c.get("name", "?") if isinstance(c, dict) else c for c in concepts]
        items.append(("concepts", ", ".join(map(str, names))))
    if manifest.get("config_hash"):
        items.append(("config hash", str(manifest["config_hash"])))
    if isinstance(manifest.get("wall_seconds"), int | float):
        items.append(("wall time", f"{manifest['wall_seconds']:.0f} s"))
    cells = "".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in items)
    return f"<table>{cells}</table>" if cells else ""


def _concept_section(
    index: int, concept: str, grid: ConceptGrid | None, numbers: dict, out_dir: Path
) -> str:
    """One concept: its own Acc numbers, then each prompt row before | after (same seeds)."""
    lower = {key: low for key, _, low in ACC_ROWS}
    # {"acc": {set: entry}, "adherence": {set: entry}}, or {set: entry} (older runs: Acc only)
    acc = numbers.get("acc") if isinstance(numbers.get("acc"), dict) else numbers
    erased = grid is not None or "target" in acc or "synonyms" in acc
    kind = "Concept" if erased else "Retained concept"
    parts = [f"<h2>{kind}: {html.escape(concept)}</h2>"]
    rows = [
        _row(k, v, lower.get(k), *_info(_how(v, ""), v.get("samples")))
        for k, v in acc.items()
        if isinstance(v, dict)
    ]
    for key, label in (("adherence", "adherence"), ("clip_score", "CLIP score")):
        for k, v in (numbers.get(key) or {}).items():
            low = k in ("target", "synonyms")
            rows.append(_row(f"{k} ({label})", v, low, *_info(_how(v, ""), v.get("samples"))))
    if rows:
        head = (
            "<tr><th>% on</th><th>before</th><th>after</th><th>change</th>"
            "<th>measured with</th><th>samples</th></tr>"
        )
        parts.append(f"<table>{head}{''.join(rows)}</table>")
    for r, (label, before, after) in enumerate(grid.rows if grid else []):
        figures = []
        for state, images in (("before", before), ("after", after)):
            name = f"c{index:03d}-{_slug(concept)}-r{r}-{state}.png"
            strip = _strip(images)
            strip.save(out_dir / name)
            alt = f"{concept}, {label}: {len(images)} images {state} erasure"
            figures.append(
                f"<figure><figcaption>{state} erasure</figcaption>"
                f'<img src="{out_dir.name}/{name}" width="{strip.width}" '
                f'height="{strip.height}" alt="{html.escape(alt)}"></figure>'
            )
        parts.append(f'<h3>{html.escape(label)}</h3><div class="pair">{"".join(figures)}</div>')
    return "\n".join(parts)


def write_report(
    run_dir: Path, metrics: dict, grids: list[ConceptGrid], manifest: dict | None = None
) -> Path:
    """Write run_dir/report.html (+ run_dir/report/*.png) and return the page's path.

    Every key of `metrics` beyond what DESIGN.md section 3 requires is optional: a partial run
    still gets a page with what it measured.
    """
    run_dir = Path(run_dir)
    out_dir = run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("c[0-9][0-9][0-9]-*.png"):  # images of an earlier report of this run
        stale.unlink()
    per_concept = metrics.get("per_concept") or {}
    by_name = {g.concept: g for g in grids}
    concepts = list(dict.fromkeys([*by_name, *per_concept]))
    sections = [
        _concept_section(i, c, by_name.get(c), per_concept.get(c) or {}, out_dir)
        for i, c in enumerate(concepts)
    ]
    title = "FADE erasure report"
    if manifest and manifest.get("concepts"):
        title += ": " + ", ".join(
            str(c.get("name", "?") if isinstance(c, dict) else c) for c in manifest["concepts"]
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="muted">Before = base model, after = with the erasure adapter; each image pair uses the
same noise seed. Acc = % of images in which the detector finds the concept.</p>
{_manifest(manifest)}{_scores(metrics)}
<h2>Summary</h2>{_summary(metrics)}
{chr(10).join(sections)}
</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
