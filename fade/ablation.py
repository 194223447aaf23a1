"""The seed paper's ablation on one concept: the full objective against each part switched off.

Why a module: `jobs/benchmark.py ablation` prints the table and docs/ablation.md keeps a measured
copy; the variants are the config switches of DESIGN.md section 2 ("w/o adversary" is
w_rem = 0, "λ = 0" drops trajectory preservation, "w/o saliency" puts LoRA on every module),
run with the same seed and prompts so the rows differ only by the switch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fade.config import load_config
from fade.eval.metrics import score_value
from fade.run import erase

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "w/o adversary": ["erase.w_rem=0"],
    "λ = 0": ["erase.lam=0"],
    "w/o saliency": ["erase.sparsity=1.0"],
}


def _slug(name: str) -> str:
    """A directory name a shell user can type: "λ = 0" -> "lambda-0", "w/o saliency" -> ..."""
    words = name.replace("λ", "lambda").replace("w/o", "without").replace("=", " ").split()
    return "-".join(words)


@dataclass
class AblationRow:
    variant: str
    metrics: dict
    modules: int
    seconds: float


def run_ablation(
    overrides: list[str], out_root: Path, variants: dict[str, list[str]] = VARIANTS
) -> list[AblationRow]:
    """One erasure per variant (`overrides` shared by all), each into `out_root/<variant>`."""
    rows = []
    for index, (name, switches) in enumerate(variants.items()):
        out = out_root / f"{index}-{_slug(name)}"
        cfg = load_config(overrides=[*overrides, *switches, f"output.dir={out}"])
        cfg.output.overwrite = True
        started = time.time()
        result = erase(cfg)
        modules = len(result.manifest["adapter"]["modules"])
        rows.append(AblationRow(name, result.metrics, modules, time.time() - started))
    return rows


def ablation_table(rows: list[AblationRow]) -> str:
    """Markdown: Acc (target, synonyms, retained, after erasure), FD_toy, adherence, H."""
    header = (
        "| variant | Acc target | Acc synonyms | Acc retained | FD_toy | adherence | H "
        "| LoRA modules | seconds |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for row in rows:
        m = row.metrics
        acc = {group: values["after"] for group, values in m["acc"].items()}
        lines.append(
            f"| {row.variant} | {acc.get('target', float('nan')):.1f} "
            f"| {acc.get('synonyms', float('nan')):.1f} | {acc.get('retained', float('nan')):.1f} "
            f"| {m['fidelity']['after']:.1f} | {m['alignment']['after']:.1f} "
            f"| {score_value(m):.1f} "
            f"| {row.modules} | {row.seconds:.0f} |"
        )
    first = rows[0].metrics
    lines.append(
        f"| base model | {first['acc']['target']['before']:.1f} "
        f"| {first['acc'].get('synonyms', {}).get('before', float('nan')):.1f} "
        f"| {first['acc']['retained']['before']:.1f} | {first['fidelity']['before']:.1f} "
        f"| {first['alignment']['before']:.1f} | | | |"
    )
    return "\n".join(lines)
