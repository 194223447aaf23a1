"""The service's checks without a server: request bounds, auth, the registry and the policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fade.config import load_config
from fade.serve.api import ApiError, ImagesBody, Limits, check_request, check_token
from fade.serve.registry import NO_ADAPTER, RegistryError, check_policy, scan
from fade.serve.runner import resolve_token

LIMITS = Limits(
    max_prompt_chars=20,
    default_steps=20,
    max_steps=50,
    default_size=32,
    max_size=64,
    size_multiple=16,
    max_count=4,
)


def test_defaults_fill_a_minimal_request() -> None:
    request = check_request(ImagesBody(prompt="  a red circle "), LIMITS, {"a"})
    assert (request.prompt, request.adapter, request.steps, request.size, request.count) == (
        "a red circle",
        NO_ADAPTER,
        20,
        32,
        1,
    )


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"prompt": " "}, 422),
        ({"prompt": "x" * 21}, 422),
        ({"adapter": "b"}, 404),
        ({"adapter": "../a"}, 404),
        ({"steps": 51}, 422),
        ({"size": 24}, 422),
        ({"size": 80}, 422),
        ({"count": 5}, 422),
        ({"count": 2, "format": "png"}, 422),
    ],
)
def test_each_bound_is_refused_with_its_status(fields: dict, status: int) -> None:
    body = ImagesBody(**{"prompt": "a circle", **fields})
    with pytest.raises(ApiError) as refused:
        check_request(body, LIMITS, {"a"})
    assert refused.value.status == status


def test_unknown_fields_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="scale"):
        ImagesBody(prompt="a circle", scale=-1.0)


def test_token_check() -> None:
    check_token(None, None)  # no token configured: open
    check_token("Bearer t0k", "t0k")
    for header, status in [(None, 401), ("Basic t0k", 401), ("Bearer nope", 403)]:
        with pytest.raises(ApiError) as refused:
            check_token(header, "t0k")
        assert refused.value.status == status


def test_the_token_comes_from_the_environment_when_the_config_has_none(monkeypatch) -> None:
    monkeypatch.setenv("FADE_SERVE_TOKEN", "from-env")
    assert resolve_token(load_config()).serve.token == "from-env"
    assert resolve_token(load_config(overrides=["serve.token=cfg"])).serve.token == "cfg"
    monkeypatch.delenv("FADE_SERVE_TOKEN")
    assert resolve_token(load_config()).serve.token is None


def _run_dir(root: Path, name: str, model: str = "toy") -> Path:
    run = root / name
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    manifest = {"model": {"path": model}, "concepts": [{"name": "diamond", "surrogate": "square"}]}
    (run / "manifest.json").write_text(json.dumps(manifest))
    metrics = {"H": 98.1, "acc": {"target": {"before": 78.1, "after": 3.1}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_registry_finds_run_directories_of_the_served_model(tmp_path: Path) -> None:
    _run_dir(tmp_path, "diamond")
    _run_dir(tmp_path, "other-model", model="black-forest-labs/FLUX.1-dev")
    _run_dir(tmp_path, "none")  # the reserved id
    (tmp_path / "not-a-run").mkdir()
    single = _run_dir(tmp_path / "elsewhere", "circle")
    entries = scan([str(tmp_path), str(single), str(tmp_path / "missing")], "toy")
    assert sorted(entries) == ["circle", "diamond"]
    public = entries["diamond"].public()
    assert public["surrogates"] == {"diamond": "square"}
    assert public["metrics"]["H"] == 98.1
    assert public["metrics"]["acc_target"] == {"before": 78.1, "after": 3.1}
    assert "path" not in public


def test_two_runs_with_one_name_and_a_missing_policy_are_refused(tmp_path: Path) -> None:
    _run_dir(tmp_path / "a", "diamond")
    _run_dir(tmp_path / "b", "diamond")
    with pytest.raises(RegistryError, match="two run directories"):
        scan([str(tmp_path / "a"), str(tmp_path / "b")], "toy")
    entries = scan([str(tmp_path / "a")], "toy")
    assert [e.id for e in check_policy(["diamond"], entries)] == ["diamond"]
    with pytest.raises(RegistryError, match=r"serve\.policy names mass100"):
        check_policy(["mass100"], entries)
