"""The ablation benchmark's variants and its table (the runs themselves are the benchmark's)."""

from __future__ import annotations

from fade.ablation import VARIANTS, AblationRow, ablation_table
from fade.config import load_config


def _metrics(target: float, retained: float, h: float) -> dict:
    return {
        "acc": {
            "target": {"before": 100.0, "after": target},
            "synonyms": {"before": 90.0, "after": target},
            "retained": {"before": 100.0, "after": retained},
        },
        "fidelity": {"metric": "FD_toy", "before": 2800.0, "after": 3000.0},
        "alignment": {"metric": "adherence", "before": 60.0, "after": 58.0},
        "H": h,
    }


def test_variants_are_the_papers_switches_and_valid_overrides() -> None:
    assert list(VARIANTS) == ["full", "w/o adversary", "λ = 0", "w/o saliency"]
    configs = {name: load_config(overrides=switches).erase for name, switches in VARIANTS.items()}
    assert configs["w/o adversary"].w_rem == 0
    assert configs["λ = 0"].lam == 0
    assert configs["w/o saliency"].sparsity == 1.0
    assert configs["full"] == load_config().erase


def test_table_has_a_row_per_variant_and_the_base_model() -> None:
    rows = [
        AblationRow("full", _metrics(0.0, 100.0, 95.2), 5, 300.0),
        AblationRow("λ = 0", _metrics(0.0, 40.0, 70.1), 5, 280.0),
    ]
    table = ablation_table(rows).splitlines()
    assert len(table) == 2 + 2 + 1
    assert table[2].startswith("| full | 0.0 | 0.0 | 100.0 | 3000.0 | 58.0 | 95.2 | 5 | 300 |")
    assert "| λ = 0 | 0.0 | 0.0 | 40.0 |" in table[3]
    assert table[4].startswith("| base model | 100.0 | 90.0 | 100.0 | 2800.0 | 60.0 |")
