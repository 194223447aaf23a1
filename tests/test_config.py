"""Tests for fade.config (typed settings, YAML, overrides, validation) and fade.errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from fade.config import (
    FadeConfig,
    apply_overrides,
    config_from_dict,
    config_hash,
    config_to_dict,
    load_config,
    save_config,
    validate_config,
)
from fade.errors import ConfigError, FadeError, run_cli

REPO = Path(__file__).resolve().parents[1]


def _error(path: str | Path | None = None, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ defaults and files


def test_defaults_validate() -> None:
    cfg = load_config()
    assert cfg == FadeConfig()
    assert validate_config(cfg) == cfg
    assert cfg.model.path == "toy"
    assert cfg.erase.t0 == 1.0
    assert cfg.concepts.names is None
    assert cfg.erase.lora_alpha is None


def test_default_yaml_matches_dataclass_defaults() -> None:
    path = REPO / "jobs" / "configs" / "default.yaml"
    assert load_config(path) == FadeConfig()
    assert yaml.safe_load(path.read_text()) == config_to_dict(FadeConfig())
    assert "python jobs/erase.py --config jobs/configs/default.yaml" in path.read_text()


def test_yaml_then_overrides_round_trip(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "model:\n  path: my/model\n  revision: abc123\n"
        "erase:\n  lam: 0.5\n  lr: 1e-4\n"
        "concepts:\n  names: [circle, square]\n"
        "seed: 7\n",
    )
    cfg = load_config(path, ["erase.t0=0.5", "distributed.strategy=zero3"])
    assert cfg.model.path == "my/model" and cfg.model.revision == "abc123"
    assert cfg.erase.lam == 0.5 and cfg.erase.lr == pytest.approx(1e-4)
    assert cfg.erase.t0 == 0.5 and cfg.distributed.strategy == "zero3"
    assert cfg.concepts.names == ["circle", "square"] and cfg.seed == 7
    for name in ("saved.yaml", "saved.json"):
        saved = save_config(cfg, tmp_path / "sub" / name)
        assert load_config(saved) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_empty_yaml_and_empty_section_mean_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == FadeConfig()
    assert load_config(_write(tmp_path, "erase:\n", "b.yaml")) == FadeConfig()


def test_config_to_dict_is_plain_and_json_serialisable() -> None:
    import json

    data = config_to_dict(FadeConfig())
    assert set(data) == {
        "model",
        "concepts",
        "erase",
        "distributed",
        "eval",
        "output",
        "serve",
        "tune",
        "seed",
    }
    assert json.loads(json.dumps(data)) == data


# ------------------------------------------------------------------ overrides


@pytest.mark.parametrize(
    ("override", "getter", "expected"),
    [
        ("erase.t0=0.5", lambda c: c.erase.t0, 0.5),
        ("erase.lam=2", lambda c: c.erase.lam, 2.0),  # float field accepts an int
        ("erase.lr=1e-4", lambda c: c.erase.lr, 1e-4),  # PyYAML reads 1e-4 as a string
        ("erase.steps=10", lambda c: c.erase.steps, 10),
        ("seed=3", lambda c: c.seed, 3),
        ("distributed.use_gpu=true", lambda c: c.distributed.use_gpu, True),
        ("output.overwrite=yes", lambda c: c.output.overwrite, True),
        ("concepts.names=circle,square", lambda c: c.concepts.names, ["circle", "square"]),
        (
            "concepts.names=[circle, red square]",
            lambda c: c.concepts.names,
            ["circle", "red square"],
        ),
        ("concepts.names=circle", lambda c: c.concepts.names, ["circle"]),
        ("concepts.names=[]", lambda c: c.concepts.names, []),
        ("model.revision=null", lambda c: c.model.revision, None),
        ("model.revision=none", lambda c: c.model.revision, None),
        ("model.revision=1.10", lambda c: c.model.revision, "1.10"),  # text kept as typed
        ("concepts.anchor=a person", lambda c: c.concepts.anchor, "a person"),
        ("erase.lora_alpha=8", lambda c: c.erase.lora_alpha, 8.0),
        (
            "distributed.gradient_checkpointing=true",
            lambda c: c.distributed.gradient_checkpointing,
            True,
        ),
        ("erase={t0: 0.7, lam: 0}", lambda c: (c.erase.t0, c.erase.lam), (0.7, 0.0)),
    ],
)
def test_override_kinds(override: str, getter, expected) -> None:
    cfg = load_config(overrides=[override])
    value = getter(cfg)
    assert value == expected
    assert type(value) is type(expected)


def test_override_null_after_yaml_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "model:\n  revision: main\nerase:\n  lora_alpha: 4\n")
    cfg = load_config(path, ["model.revision=null", "erase.lora_alpha=null"])
    assert cfg.model.revision is None and cfg.erase.lora_alpha is None


def test_apply_overrides_mapping_keeps_base_and_validates() -> None:
    base = load_config(overrides=["erase.steps=5"])
    cfg = apply_overrides(base, {"erase.lam": 0.25, "erase.t0": 1})
    assert (cfg.erase.steps, cfg.erase.lam, cfg.erase.t0) == (5, 0.25, 1.0)
    assert base.erase.lam is None  # the input is not mutated (null: the recipe fills it)
    with pytest.raises(ConfigError, match=r"erase\.t0"):
        apply_overrides(base, {"erase.t0": 0})


def test_validate_config_rejects_bad_programmatic_values() -> None:
    cfg = FadeConfig()
    cfg.erase.sparsity = 0.0
    expected = r"erase\.sparsity = 0 is out of range: must be in \(0, 1\]"
    with pytest.raises(ConfigError, match=expected):
        validate_config(cfg)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("erase.t0=1.5", "erase.t0 = 1.5 is out of range: must be in (0, 1]"),
        ("erase.t0=0", "erase.t0 = 0 is out of range: must be in (0, 1]"),
        ("erase.sparsity=-0.1", "erase.sparsity = -0.1 is out of range: must be in (0, 1]"),
        ("erase.lr=0", "erase.lr = 0 is out of range: must be > 0"),
        ("erase.lam=-1", "erase.lam = -1 is out of range: must be >= 0"),
        ("erase.steps=0", "erase.steps = 0 is out of range: must be >= 1"),
        ("erase.lora_rank=2048", "erase.lora_rank = 2048 is out of range: must be in [1, 1024]"),
        (
            "erase.early_stop_margin=0.6",
            "erase.early_stop_margin = 0.6 is out of range: must be in [0, 0.5]",
        ),
        ("eval.confidence=1", "eval.confidence = 1 is out of range: must be in (0, 1)"),
        ("seed=-1", "seed = -1 is out of range: must be >= 0"),
        ("eval.height=30", "eval.height = 30 is not allowed: must be a multiple of 8"),
        (
            "model.dtype=float64",
            "model.dtype = 'float64' is not allowed: must be one of float32, bfloat16, float16",
        ),
        (
            "distributed.strategy=zero1",
            "distributed.strategy = 'zero1' is not allowed: must be one of ddp, fsdp, zero2, zero3",
        ),
        (
            "distributed.offload=optimizer",
            "distributed.offload = optimizer is not available with distributed.strategy = ddp: "
            "must be one of none",
        ),
        ("erase.steps=abc", "erase.steps: expected int, got 'abc'"),
        ("erase.steps=1.5", "erase.steps: expected int, got 1.5"),
        ("erase.t0=abc", "erase.t0: expected float, got 'abc'"),
        ("erase.t0=true", "erase.t0: expected float, got True"),
        ("erase.lr=nan", "erase.lr: expected float, got"),
        ("distributed.use_gpu=maybe", "distributed.use_gpu: expected bool, got 'maybe'"),
        ("concepts.names={a: 1}", "concepts.names: expected list of str"),
        ("model.path=", "model.path: expected str, got None"),
        ("model.path=' '", "model.path must not be empty"),
        ("erase=3", "erase: expected a mapping of settings, got 3"),
        ("erase.tzero=1", "unknown key 'erase.tzero' (did you mean 'erase.t0'?)"),
        ("t0=0.5", "unknown key 't0' (did you mean 'erase.t0'?)"),
        ("erase.lam.x=1", "unknown key 'erase.lam.x'"),
        ("foo", "bad override 'foo' (expected key=value)"),
        ("=1", "bad override '=1' (expected key=value)"),
    ],
)
def test_each_error_is_one_line_naming_key_and_allowed(override: str, expected: str) -> None:
    assert expected in _error(overrides=(override,))


def test_unknown_key_without_close_match_has_no_suggestion() -> None:
    assert _error(overrides=("zzzzzz=1",)) == "unknown key 'zzzzzz'"


def test_unknown_key_in_yaml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "erase:\n  tzero: 0.5\n")
    message = _error(path)
    assert "unknown key 'erase.tzero'" in message and str(path) in message
    assert "did you mean 'erase.t0'?" in message


def test_missing_yaml_file(tmp_path: Path) -> None:
    message = _error(tmp_path / "nope.yaml")
    assert message.startswith("config file not found:") and "nope.yaml" in message
    assert "not a file" in _error(tmp_path)


def test_yaml_not_a_mapping(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "- a\n- b\n"))
    assert "must contain a mapping" in message and "got list" in message


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "erase:\n  t0: [0.3\n  lam: 1\n"))
    assert message.startswith("invalid YAML in ") and "line" in message


def test_yaml_section_not_a_mapping(tmp_path: Path) -> None:
    assert "erase: expected a mapping" in _error(_write(tmp_path, "erase: 5\n"))


def test_yaml_range_error(tmp_path: Path) -> None:
    message = _error(_write(tmp_path, "erase:\n  t0: 2\n"))
    assert message == "erase.t0 = 2 is out of range: must be in (0, 1]"


def test_config_error_is_a_fade_error() -> None:
    assert issubclass(ConfigError, FadeError)


# ------------------------------------------------------------------ CLI helper


def test_run_cli_turns_user_error_into_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> int:
        load_config(overrides=["erase.t0=1.5"])
        return 0

    assert run_cli(main) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: erase.t0 = 1.5 is out of range: must be in (0, 1]\n"


def test_run_cli_flattens_multiline_messages(capsys: pytest.CaptureFixture[str]) -> None:
    def main() -> None:
        raise FadeError("first\nsecond")

    assert run_cli(main) == 2
    assert capsys.readouterr().err == "error: first second\n"


def test_run_cli_passes_through_exit_codes_and_bugs() -> None:
    assert run_cli(lambda: None) == 0
    assert run_cli(lambda: 3) == 3

    def buggy() -> None:
        raise ValueError("a bug, not a user mistake")

    with pytest.raises(ValueError):
        run_cli(buggy)


# ------------------------------------------------------------------ hash


def test_config_hash_stable_and_sensitive() -> None:
    a, b = FadeConfig(), load_config()
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 12 and all(c in "0123456789abcdef" for c in config_hash(a))
    changed = dataclasses.replace(a, erase=dataclasses.replace(a.erase, t0=0.31))
    assert config_hash(changed) != config_hash(a)
    assert config_hash(load_config(overrides=["seed=1"])) != config_hash(a)


def test_config_hash_survives_save_load(tmp_path: Path) -> None:
    cfg = load_config(overrides=["concepts.names=circle,square", "erase.lam=0.5"])
    assert config_hash(load_config(save_config(cfg, tmp_path / "c.yaml"))) == config_hash(cfg)


def test_config_hash_ignores_where_a_run_is_written() -> None:
    base = load_config()
    moved = load_config(overrides=["output.dir=elsewhere", "distributed.run_name=other"])
    assert config_hash(moved) == config_hash(base)


def test_every_setting_is_documented() -> None:
    """docs/configuration.md stays true to the code: each dotted key has a row."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    for section, values in config_to_dict(load_config()).items():
        keys = [section] if not isinstance(values, dict) else [f"{section}.{k}" for k in values]
        for key in keys:
            assert f"`{key}`" in doc, f"{key} is missing from docs/configuration.md"


def test_a_config_written_before_the_strategies_were_renamed_still_loads() -> None:
    """Run directories keep their config.yaml; `zero_stage` and `deepspeed` were retired."""
    old = {"distributed": {"strategy": "deepspeed", "zero_stage": 3, "num_workers": 4}}
    cfg = config_from_dict(old)
    assert (cfg.distributed.strategy, cfg.distributed.num_workers) == ("zero3", 4)
    assert config_from_dict({"distributed": {"zero_stage": 2}}).distributed.strategy == "ddp"
    assert config_from_dict({"distributed": {"strategy": "deepspeed"}}).distributed.strategy == (
        "zero2"
    )


def test_a_yaml_may_rely_on_overrides_for_a_valid_combination(tmp_path) -> None:
    path = tmp_path / "zero.yaml"
    path.write_text("distributed:\n  strategy: zero3\n  offload: optimizer\n")
    cfg = load_config(path, ["distributed.use_gpu=true"])
    assert (cfg.distributed.offload, cfg.distributed.use_gpu) == ("optimizer", True)
    with pytest.raises(ConfigError, match=r"needs distributed\.use_gpu"):
        load_config(path)
