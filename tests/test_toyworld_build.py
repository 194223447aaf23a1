"""The toy-world build's bookkeeping: rerunning one stage keeps the others' figures."""

from __future__ import annotations

import json

from fade.toyworld.build import build_toyworld
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
