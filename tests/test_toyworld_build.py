"""The toy-world build's bookkeeping: rerunning one stage keeps the others' figures."""

from __future__ import annotations

import json

import pytest

from fade.toyworld.build import STAGES, build_toyworld
from fade.toyworld.spec import ToyBuildConfig


def _committed(out, config: ToyBuildConfig, report: dict) -> None:
    out.mkdir(parents=True)
    recipe = json.loads(json.dumps(config.to_dict()))
    (out / "build_config.json").write_text(json.dumps({"recipe": recipe, "report": report}))


def test_a_rerun_stage_keeps_the_figures_of_the_stages_it_did_not_run(tmp_path) -> None:
    config, out, work = ToyBuildConfig(), tmp_path / "model", tmp_path / "work"
    _committed(out, config, {"model": {"seconds": 1.0}, "check": {"old": True}})
    work.mkdir()
    (work / "check.json").write_text(json.dumps({"new": True}))  # this run's own check
    report = build_toyworld(config, work, out, stages=(), detector_out=tmp_path / "detector")
    assert report == {"model": {"seconds": 1.0}, "check": {"new": True}}
    saved = json.loads((out / "build_config.json").read_text())
    assert saved["report"] == report


def test_figures_of_another_recipe_are_not_carried_over(tmp_path) -> None:
    out = tmp_path / "model"
    _committed(out, ToyBuildConfig(seed=1), {"model": {"seconds": 1.0}})
    report = build_toyworld(ToyBuildConfig(), tmp_path / "work", out, stages=())
    assert report == {}


def test_a_stage_that_reran_makes_the_figures_measured_on_it_stale(tmp_path) -> None:
    """A new model invalidates the later phases' and the check's figures of the old one; a new
    detector invalidates the check. (`_earlier_report` is what `build_toyworld` merges.)"""
    from fade.toyworld.build import _earlier_report

    config, out = ToyBuildConfig(), tmp_path / "model"
    figures = {stage: {"seconds": 1.0} for stage in STAGES}
    _committed(out, config, figures)
    assert set(_earlier_report(out, config, ("check",))) == set(STAGES) - {"check"}
    assert set(_earlier_report(out, config, ("model",))) == {"autoencoder", "detector"}
    after_detector = set(_earlier_report(out, config, ("detector",)))
    assert after_detector == {"autoencoder", "model", "refine", "polish"}
    assert set(_earlier_report(out, config, ("polish",))) == set(STAGES) - {"polish", "check"}


def test_the_cli_says_in_one_line_that_there_is_no_model_to_draw(tmp_path) -> None:
    from tests.test_cli import run_job

    sheet = tmp_path / "sheet.png"
    result = run_job(
        *("--stages", "", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "nothing")),
        *("--sheet", str(sheet)),
        script="build_toyworld.py",
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: no toy model in {tmp_path / 'nothing'}: build it first (the model stage)"
    ]
    assert not sheet.exists() and not (tmp_path / "nothing").exists()


def test_a_scratch_build_keeps_its_detector_beside_its_model(tmp_path) -> None:
    from fade.toyworld.build import MODEL_DIR, detector_dir_for
    from fade.toyworld.detector import DETECTOR_DIR

    assert detector_dir_for(MODEL_DIR) == DETECTOR_DIR
    assert detector_dir_for(tmp_path / "toy") == tmp_path / "toy-detector"


def test_a_scratch_check_reads_the_detector_beside_its_model(tmp_path) -> None:
    """Not the committed detector: a scratch model is judged by its own build's detector."""
    from fade.errors import FadeError

    out = tmp_path / "model"
    out.mkdir()
    (out / "model_index.json").write_text("{}")  # the check refuses before loading anything
    with pytest.raises(FadeError, match=f"no toy detector in {tmp_path / 'model-detector'}"):
        build_toyworld(ToyBuildConfig(), tmp_path / "work", out, stages=("check",))


def test_build_toyworld_carries_over_only_what_its_stages_left_valid(tmp_path) -> None:
    config, out, work = ToyBuildConfig(), tmp_path / "model", tmp_path / "work"
    _committed(out, config, {stage: {"old": True} for stage in STAGES})
    work.mkdir()
    (work / "check.json").write_text(json.dumps({"new": True}))  # the check this run did
    (out / "model_index.json").write_text("{}")
    detector = tmp_path / "detector"
    detector.mkdir()
    report = build_toyworld(config, work, out, stages=("check",), detector_out=detector)
    assert report["check"] == {"new": True}
    assert all(report[stage] == {"old": True} for stage in STAGES if stage != "check")


def test_a_later_phase_needs_the_model_it_continues(tmp_path) -> None:
    from fade.errors import FadeError

    with pytest.raises(FadeError, match=r"no toy model in .*: build it first"):
        build_toyworld(ToyBuildConfig(), tmp_path / "work", tmp_path / "model", stages=("polish",))


def test_a_work_directory_of_another_recipe_is_refused(tmp_path) -> None:
    """Its checkpoints would resume another schedule, its figures describe another model."""
    from fade.errors import FadeError

    work = tmp_path / "work"
    build_toyworld(ToyBuildConfig(), work, tmp_path / "model", stages=())
    build_toyworld(ToyBuildConfig(), work, tmp_path / "model", stages=())  # same recipe: fine
    with pytest.raises(FadeError, match="holds a build of another recipe"):
        build_toyworld(ToyBuildConfig(seed=1), work, tmp_path / "model", stages=())


def test_the_time_summary_lists_the_timed_stages_in_build_order() -> None:
    from fade.toyworld.build import time_summary

    report = {"check": {"seconds": 480.0}, "model": {"seconds": 3090.0}, "detector": {}}
    assert time_summary(report, 600.0) == "minutes by stage: model 51.5, check 8.0; this run: 10.0"
    assert time_summary({}, 6.0) == "minutes by stage: none timed; this run: 0.1"
