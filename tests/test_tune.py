"""Ray Tune sweeps: the search space file, the results, and a 2-trial sweep on the toy world."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fade.config import FadeConfig, apply_overrides, load_config
from fade.errors import ConfigError, FadeError
from fade.plan import make_plan
from fade.tuning.results import TrialRow, best_row, pareto_front
from fade.tuning.space import Dimension, load_space, parse_space
from fade.tuning.trial import quick_eval_config, score_row

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SPACE = REPO / "tune" / "spaces" / "default.yaml"


def test_the_default_space_holds_the_default_config() -> None:
    cfg = FadeConfig()
    space = load_space(DEFAULT_SPACE, cfg)
    assert [d.key for d in space.dimensions] == ["erase.lam", "erase.t0", "erase.sparsity"]
    assert space.dimensions[0].kind == "loguniform"
    # the remove recipe's sparsity (null in the config) is what the base trial runs
    assert space.default_point(make_plan(cfg).config) == {
        "erase.lam": 60.0,
        "erase.t0": 1.0,
        "erase.sparsity": 0.5,
    }


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "must be a non-empty mapping"),
        ({"erase.lamda": {"uniform": [1, 2]}}, "unknown key 'erase.lamda'"),
        ({"erase.t0": {"uniform": [0.5, 1.5]}}, "erase.t0 = 1.5 is out of range"),
        ({"erase.sparsity": {"uniform": [0.9, 0.1]}}, "uniform takes [low, high] with low < high"),
        ({"erase.lam": {"loguniform": [0, 10]}}, "loguniform takes [low, high] with 0 < low"),
        ({"erase.lam": {"normal": [0, 1]}}, "unknown distribution 'normal'"),
        ({"erase.lora_rank": {"choice": []}}, "choice takes a non-empty list"),
        ({"erase.lora_rank": {"randint": [1.5, 4]}}, "randint takes [low, high] integers"),
        ({"erase.lam": [1, 2]}, "give exactly one distribution"),
        ({"output.dir": {"choice": ["a"]}}, "a sweep varies the erasure's settings"),
        ({"eval.guidance_scale": {"uniform": [1, 5]}}, "a sweep varies the erasure's settings"),
    ],
)
def test_a_bad_space_is_refused_in_one_line(space, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_space(space, "space.yaml", FadeConfig())
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_base_value_outside_the_space_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("erase.lam: {loguniform: [2, 40]}\n")
    space = load_space(path, FadeConfig())
    with pytest.raises(ConfigError, match=r"erase.lam=60.0 lies outside the search space"):
        space.default_point(make_plan(FadeConfig()).config)


def test_randint_includes_its_upper_end() -> None:
    dimension = Dimension("erase.lora_rank", "randint", (2, 3))
    domain = dimension.domain()
    assert {domain.sample() for _ in range(200)} == {2, 3}
    assert dimension.contains(3) and not dimension.contains(4)


def test_pareto_front_keeps_only_points_nothing_beats_on_both_axes() -> None:
    points = [(0.9, 0.9), (0.95, 0.8), (0.8, 0.95), (0.85, 0.85), (0.9, 0.9), (0.5, 0.99)]
    front = pareto_front(points)
    assert [points[i] for i in front] == [
        (0.5, 0.99),
        (0.8, 0.95),
        (0.9, 0.9),
        (0.9, 0.9),
        (0.95, 0.8),
    ]


def test_best_skips_trials_that_cost_the_retained_concepts_too_much() -> None:
    def row(number: int, status: str, h: float, retained_after: float) -> TrialRow:
        scores = {"H": h, "acc_retained_before": 54.7, "acc_retained_after": retained_after}
        return TrialRow(number, f"t{number}", status, {}, scores)

    rows = [
        row(1, "finished", 98.2, 53.9),
        row(2, "finished", 101.9, 42.2),  # the highest H, 12.5 points off the neighbours
        row(3, "finished", 100.0, 50.0),
        row(4, "stopped early", 103.0, 54.7),  # a quick score never competes
        row(5, "error", 0.0, 0.0),
    ]
    assert best_row(rows, "H", max_retained_drop=5.0).number == 3
    assert best_row(rows, "H", max_retained_drop=None).number == 2
    assert best_row(rows, "H", max_retained_drop=1.0).number == 1
    assert best_row(rows[1:2], "H", max_retained_drop=5.0) is None


def test_quick_evaluation_is_about_a_third_of_the_images() -> None:
    full = FadeConfig().eval
    quick = quick_eval_config(FadeConfig()).eval
    images = lambda e: 2 * 8 * e.samples_per_prompt + 4 * e.images_per_neighbour + e.fd_samples  # noqa: E731
    assert 0.3 <= images(quick) / images(full) <= 0.4


def test_score_row_reads_e_f_and_h_from_metrics_json() -> None:
    metrics = {
        "acc": {"target": {"before": 80.0, "after": 5.0}, "retained": {"before": 50, "after": 48}},
        "fidelity": {"before": 100.0, "after": 110.0},
        "alignment": {"before": 90.0, "after": 81.0},
        "H": 91.0,
    }
    row = score_row(metrics, "full")
    assert row["E"] == pytest.approx(0.95)
    assert row["F"] == pytest.approx(0.5 * (0.9 + 0.9))
    assert row["H"] == 91.0 and row["H_o"] is None and row["acc_synonyms_after"] is None


def run_sweep_script(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tune" / "sweep.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_sweep_help_and_mistakes_are_one_line_before_ray_starts(tmp_path: Path) -> None:
    result = run_sweep_script("--help")
    assert result.returncode == 0
    for flag in ("--space", "--trials", "--name", "--metric", "trials.parquet", "best.yaml"):
        assert flag in result.stdout
    bad = tmp_path / "space.yaml"
    bad.write_text("erase.t0: {uniform: [0.5, 2]}\n")
    cases = [
        (["--space", str(bad)], "erase.t0 = 2 is out of range"),
        (["--space", str(tmp_path / "none.yaml")], "search space file not found"),
        (["--concepts", "dragon"], "dragon"),
        (["--trials", "0"], "tune.num_samples = 0 is out of range"),
        (["--name", "a/b"], "tune.name='a/b': use letters"),
    ]
    for args, message in cases:
        result = run_sweep_script(*args, f"tune.dir={tmp_path / 'sweeps'}")
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "sweeps").exists()


TINY_SWEEP = [
    "distributed.num_workers=1",
    "erase.steps=6",
    "erase.disc_pretrain_steps=2",
    "eval.samples_per_prompt=2",
    "eval.images_per_neighbour=8",
    "eval.fd_samples=32",
    "eval.num_inference_steps=4",
    "tune.num_samples=2",
    "tune.name=tiny",
    "tune.max_retained_drop=null",  # 32 retained images: one image moves Acc 3 points
]


def test_two_trial_sweep_writes_its_results_and_a_rerun_continues_it(
    ray_session, tmp_path: Path
) -> None:
    """The whole sweep on the toy world with tiny settings: the table, the best config (which
    jobs/erase.py accepts), the plot; then the same command again finds the sweep finished."""
    import pyarrow.parquet as pq
    from PIL import Image

    from fade.tuning.sweep import run_sweep, summary

    cfg = load_config(None, [*TINY_SWEEP, f"tune.dir={tmp_path}"])
    outcome = run_sweep(cfg, DEFAULT_SPACE)
    assert outcome.complete and not outcome.resumed
    table = pq.read_table(outcome.files["trials.parquet"]).to_pylist()
    assert [row["trial"] for row in table] == [1, 2]
    base, other = table
    assert base["is_default"] and base["status"] == "finished"
    # trial 1 runs the base config's own values (the recipe's, pinned by the default-space test)
    base_point = load_space(DEFAULT_SPACE, cfg).default_point(make_plan(cfg).config)
    assert {key: base[f"param:{key}"] for key in base_point} == base_point
    assert other["status"] in ("finished", "stopped early")
    for row in table:
        assert 0 <= row["E"] <= 1 and row["F"] > 0 and 0 <= row["H"] <= 100
        assert row["acc_target_before"] > 0
        assert math.isclose(
            row["H"], 200 * row["E"] * row["F"] / (row["E"] + row["F"]), rel_tol=1e-6
        )
    best = max((r for r in table if r["status"] == "finished"), key=lambda r: r["H"])
    assert outcome.best is not None and outcome.best.value("H") == best["H"]
    assert outcome.best.value("H") >= outcome.default.value("H")
    best_cfg = load_config(outcome.files["best.yaml"])
    assert best_cfg.erase.lam == pytest.approx(best["param:erase.lam"])
    assert best_cfg.erase.t0 == pytest.approx(best["param:erase.t0"])
    assert best_cfg.output.dir == "runs/tiny-best"
    dry = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "erase.py"),
            "--config",
            str(outcome.files["best.yaml"]),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    with Image.open(outcome.files["pareto.png"]) as image:
        assert image.size[0] >= 600 and image.getextrema()[0][0] < 128  # drawn, not blank
    assert "best: trial" in summary(outcome)

    again = run_sweep(cfg, DEFAULT_SPACE)
    assert again.resumed and again.complete
    assert [(r.trial_id, r.value("H")) for r in again.rows] == [
        (r.trial_id, r.value("H")) for r in outcome.rows
    ]
    changed = apply_overrides(cfg, {"erase.lr": 1e-2})
    with pytest.raises(FadeError, match="was started with other settings"):
        run_sweep(changed, DEFAULT_SPACE)
    assert yaml.safe_load((tmp_path / "tiny" / "fade_sweep.json").read_text())["space"]


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(ray_session, tmp_path: Path) -> None:
    """A trial whose erasure fails (its checkpoint storage cannot be written) gives an "error"
    row with the reason, not a crashed sweep."""
    import pyarrow.parquet as pq

    from fade.tuning.sweep import run_sweep, summary

    space = tmp_path / "space.yaml"
    space.write_text("erase.lam: {choice: [20.0]}\n")
    unwritable = tmp_path / "not-a-folder"
    unwritable.write_text("a file where the checkpoints would go")
    overrides = [
        *TINY_SWEEP,
        "tune.num_samples=1",
        "tune.include_default=false",
        f"distributed.storage_path={unwritable}",
    ]
    cfg = load_config(None, [*overrides, f"tune.dir={tmp_path}", "tune.name=failing"])
    outcome = run_sweep(cfg, space)
    assert outcome.complete and outcome.best is None
    (row,) = pq.read_table(outcome.files["trials.parquet"]).to_pylist()
    assert row["status"] == "error" and row["error"], row
    assert "no trial finished its full evaluation" in summary(outcome)
    assert outcome.files["pareto.png"].exists() and not outcome.files["best.yaml"].exists()
