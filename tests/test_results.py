"""metrics.json and metrics.parquet from measured states: every number names what measured it
and on how many images; the table has one row per (concept, prompt set, model state).

The states here are built by hand (detections chosen per image), so every expected number can
be worked out on paper; no model runs.
"""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
import torch

from fade.eval.erasure import EvalSets, GroupResult, PromptGroup, StateMeasurement
from fade.eval.results import SCHEMA, RunFacts, metrics_rows, metrics_table, write_results
from fade.eval.summary import Measures, summarise

FACTS = RunFacts("toy", "r1", ["diamond"], "cfg123", 7)


def _sets() -> EvalSets:
    return EvalSets(
        target=PromptGroup(["a red diamond"] * 4, ["diamond"] * 4),
        synonyms=PromptGroup(["a red rhombus"] * 2, ["diamond"] * 2),
        retained=PromptGroup(
            ["a blue circle"] * 2 + ["a cross"] * 2, ["circle"] * 2 + ["cross"] * 2
        ),
        neutral=["a red shape"] * 4,
        retained_names=["circle", "cross"],
    )


def _state(found: dict[str, list[set[str]]], fd: float) -> StateMeasurement:
    sets, groups = _sets(), {}
    for name in ("target", "synonyms", "retained"):
        group = getattr(sets, name)
        images = torch.zeros(len(group.prompts), 3, 8, 8)
        groups[name] = GroupResult(group.prompts, group.concepts, images, found[name])
    groups["neutral"] = GroupResult(sets.neutral, [], torch.zeros(4, 3, 8, 8), found["neutral"])
    return StateMeasurement(groups, fd)


RED_DIAMOND, RED = {"red", "diamond"}, {"red"}
BEFORE = _state(
    {
        "target": [RED_DIAMOND] * 4,  # Acc 100, adherence 100
        "synonyms": [RED_DIAMOND, RED],  # Acc 50
        "retained": [{"blue", "circle"}, {"circle"}, {"cross"}, set()],  # Acc 75
        "neutral": [RED] * 4,  # adherence 100
    },
    fd=10.0,
)
AFTER = _state(
    {
        "target": [RED, RED, RED, RED_DIAMOND],  # Acc 25, adherence (.5*3 + 1)/4 = 62.5
        "synonyms": [RED, RED],  # Acc 0
        "retained": [{"blue", "circle"}, {"circle"}, {"cross"}, {"cross"}],  # Acc 100
        "neutral": [RED, RED, set(), set()],  # adherence 50
    },
    fd=25.0,
)


@pytest.fixture
def metrics() -> dict:
    return summarise(BEFORE, AFTER, _sets(), Measures("toy", 0.9))


def test_numbers_by_hand(metrics) -> None:
    acc = metrics["acc"]
    assert (acc["target"]["before"], acc["target"]["after"]) == (100.0, 25.0)
    assert (acc["synonyms"]["before"], acc["synonyms"]["after"]) == (50.0, 0.0)
    assert (acc["retained"]["before"], acc["retained"]["after"]) == (75.0, 100.0)
    assert metrics["per_concept"]["cross"]["acc"]["retained"]["after"] == 100.0
    assert metrics["per_concept"]["diamond"]["adherence"]["target"]["after"] == 62.5
    # adherence over retained + neutral, per image share of the prompt's concepts:
    # before: retained 1, .5, 1, 0 and neutral 1 x4 -> 6.5/8; after: 1, .5, 1, 1, 1, 1, 0, 0
    assert metrics["alignment"]["before"] == pytest.approx(100 * 6.5 / 8)
    assert metrics["alignment"]["after"] == pytest.approx(100 * 5.5 / 8)
    # FD 10 -> 25 is past 2 x 10: the shift term is 0; F = (5.5/6.5) / 2
    f = (5.5 / 6.5) / 2
    assert metrics["H"] == pytest.approx(200 * 0.75 * f / (0.75 + f))
    assert metrics["H_o"] == pytest.approx(100 * 3 / (1 / 0.75 + 1 / 1.0 + 1 / 1.0))
    assert metrics["H_c"] == pytest.approx(100 * 2 / (1 / 0.75 + 1 / 1.0))
    # H_a: adherence after on retained (1 + .5 + 1 + 1)/4 minus on target 62.5
    assert metrics["H_a"] == pytest.approx(87.5 - 62.5)


def _provenance(tree: object, path: str = "") -> list[str]:
    """Paths of numbers in metrics.json that do not say what measured them and on how many."""
    bad = []
    if isinstance(tree, dict):
        measured = "value" in tree or "before" in tree or "after" in tree
        named = "detector" in tree or "features" in tree
        if measured and not (named and isinstance(tree.get("samples"), int | dict)):
            bad.append(path)
        for key, value in tree.items():
            if key not in ("samples", "not_measured"):
                bad += _provenance(value, f"{path}.{key}")
    return bad


def test_every_metric_names_its_detector_or_features_and_samples(metrics) -> None:
    assert _provenance(json.loads(json.dumps(metrics))) == []
    assert (
        metrics["fidelity"]["metric"] == "FD_toy"
        and "toy detector" in metrics["fidelity"]["features"]
    )
    assert metrics["fidelity"]["samples"] == 4 and metrics["fidelity"]["implementation"].startswith(
        "clean-fid 0.1.35"
    )
    assert (
        metrics["acc"]["target"]["samples"] == 4
        and metrics["scores"]["H"]["samples"]["fidelity"] == 4
    )


def test_without_a_feature_network_or_alignment_the_scores_say_so() -> None:
    measures = Measures("imagenet", 0.5, alignment=None, fidelity=None)
    metrics = summarise(BEFORE, AFTER, _sets(), measures)
    assert "fidelity" not in metrics and "alignment" not in metrics and "H" not in metrics
    assert set(metrics["not_measured"]) == {"fidelity", "alignment", "H", "H_a"}
    assert metrics["scores"]["H_o"]["detector"] == "imagenet" and metrics["H_c"] > 0
    assert _provenance(metrics) == []
    assert any("not measured" in line for line in metrics_table(metrics))


def test_parquet_has_one_row_per_concept_set_and_state(metrics, tmp_path) -> None:
    paths = write_results(tmp_path, metrics, [], FACTS, {"concepts": ["diamond"]})
    table = pq.read_table(paths["parquet"])
    assert table.schema.equals(SCHEMA)
    rows = table.to_pylist()
    keys = [(r["concept"], r["prompt_set"], r["state"]) for r in rows]
    expected = {
        (c, s, state)
        for c, s in [
            ("diamond", "target"),
            ("diamond", "synonyms"),
            ("circle", "retained"),
            ("cross", "retained"),
            (None, "neutral"),
        ]
        for state in ("before", "after")
    }
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
    for row in rows:
        assert row["model_id"] == "toy" and row["model_revision"] == "r1"
        assert row["concepts"] == ["diamond"] and row["config_hash"] == "cfg123"
        assert row["seed"] == 7 and row["detector"] == "toy" and row["samples"] > 0
    by_key = {(r["concept"], r["prompt_set"], r["state"]): r for r in rows}
    assert by_key[("diamond", "target", "after")]["acc"] == 25.0
    assert by_key[("diamond", "target", "after")]["adherence"] == 62.5
    assert by_key[("cross", "retained", "before")]["acc"] == 50.0
    neutral = by_key[(None, "neutral", "after")]
    assert neutral["fd"] == 25.0 and neutral["fidelity_metric"] == "FD_toy"
    assert neutral["adherence"] == 50.0 and math.isnan(neutral["acc"] or math.nan)
    assert json.loads(paths["json"].read_text())["acc"] == metrics["acc"]
    assert paths["report"].is_file()


def test_rows_come_from_metrics_json_alone(metrics) -> None:
    """The parquet is the same numbers as metrics.json: rebuilt from the JSON, rows match."""
    again = metrics_rows(json.loads(json.dumps(metrics)), FACTS)
    assert again == metrics_rows(metrics, FACTS)


def test_the_report_shows_each_numbers_provenance_and_what_was_not_measured(tmp_path) -> None:
    from fade.eval.report import write_report

    metrics = summarise(BEFORE, AFTER, _sets(), Measures("toy", 0.9))
    text = write_report(tmp_path / "a", metrics, []).read_text(encoding="utf-8")
    for fact in ("H_o", "H_c", "H_a", "MACE objects", "detector: toy", "toy detector&#x27;s"):
        assert fact in text, fact
    assert "adherence on target prompts" in text and "Not measured" not in text
    measures = Measures("imagenet", 0.5, alignment=None, fidelity=None)
    partial = summarise(BEFORE, AFTER, _sets(), measures)
    text = write_report(tmp_path / "b", partial, []).read_text(encoding="utf-8")
    assert "Not measured" in text and "Inception" in text and "detector: imagenet" in text
