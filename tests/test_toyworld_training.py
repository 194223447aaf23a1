"""The toy world's training loop: a few steps on the real architecture, a resume that continues
exactly where a crash left it, and the compiled path with its fallback where Inductor cannot
compile."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from fade.backbones.builders import build_flux_pipeline
from fade.toyworld import training
from fade.toyworld.data import make_scene_set
from fade.toyworld.spec import MAX_TOKENS, TOY_ARCH, ModelSchedule
from fade.toyworld.training import compiled_for_training, encode_dataset, train_model
from fade.toyworld.vocabulary import vocabulary

SCHEDULE = ModelSchedule(steps=3, batch_size=4, warmup_steps=1, checkpoint_every=2)


class _Crash(Exception):
    pass


def _transformer_weights(pipeline) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipeline.transformer.state_dict().items()}


def _fresh_run():
    torch.manual_seed(0)  # T5's dropout draws from torch's global generator
    pipeline = build_flux_pipeline(TOY_ARCH, vocabulary(), seed=0)
    data = make_scene_set(16, seed=0)
    return pipeline, encode_dataset(pipeline, data), data


def test_train_model_moves_the_weights_and_checkpoints(tmp_path, monkeypatch) -> None:
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(training, "compiled_for_training", lambda m: compiled.append(m) or m)
    pipeline, latents, data = _fresh_run()
    before = _transformer_weights(pipeline)
    seen: list[int] = []
    train_model(
        pipeline, latents, data, SCHEDULE, tmp_path, 0, MAX_TOKENS,
        on_checkpoint=seen.append, compile_transformer=True,
    )  # fmt: skip
    after = _transformer_weights(pipeline)
    assert seen == [2, 3]
    assert compiled == [pipeline.transformer]  # the build's compile switch reaches the loop
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not pipeline.transformer.training  # EMA weights loaded, ready to sample
    state = torch.load(tmp_path / "model.pt", weights_only=False)
    assert state["step"] == 3
    assert all(torch.equal(state["ema"]["transformer"][k], after[k]) for k in after)


def test_a_resumed_run_ends_where_an_unbroken_one_does(tmp_path) -> None:
    """Weights, optimizer, EMA and every random generator come back from the checkpoint: a
    build stopped mid-stage and rerun trains the same model as one that never stopped."""
    unbroken_work, work = tmp_path / "unbroken", tmp_path / "resumed"
    unbroken_work.mkdir()
    work.mkdir()
    pipeline, latents, data = _fresh_run()
    train_model(pipeline, latents, data, SCHEDULE, unbroken_work, 0, MAX_TOKENS)
    unbroken = _transformer_weights(pipeline)

    def crash_at_step_2(step: int) -> None:
        if step == 2:
            raise _Crash

    pipeline, latents, data = _fresh_run()
    with pytest.raises(_Crash):
        train_model(
            pipeline, latents, data, SCHEDULE, work, 0, MAX_TOKENS, on_checkpoint=crash_at_step_2
        )
    pipeline, latents, data = _fresh_run()  # a new process: fresh weights, seeds from the top
    torch.manual_seed(123)  # the checkpoint, not this, decides the dropout draws
    train_model(pipeline, latents, data, SCHEDULE, work, 0, MAX_TOKENS)
    resumed = _transformer_weights(pipeline)
    assert all(torch.equal(unbroken[k], resumed[k]) for k in unbroken)


def test_compiling_falls_back_to_the_module_where_inductor_fails(monkeypatch) -> None:
    def broken_compile(fn):
        def run(*args, **kwargs):
            raise RuntimeError("no working C++ compiler")

        return run

    module = torch.nn.Linear(2, 2)
    monkeypatch.setattr(training.torch, "compile", broken_compile)
    training.inductor_works.cache_clear()
    try:
        assert compiled_for_training(module) is module
    finally:
        training.inductor_works.cache_clear()


@pytest.mark.skipif(shutil.which("g++") is None, reason="Inductor on Linux needs g++")
def test_inductor_compiles_and_runs_backward_here() -> None:
    """Where the build's compiler is present, the probe really compiles: the build trains
    compiled, at the speed docs/toyworld.md quotes."""
    assert training.inductor_works()


def test_the_build_cli_passes_no_compile_through(monkeypatch, tmp_path) -> None:
    path = Path(__file__).resolve().parent.parent / "jobs" / "build_toyworld.py"
    spec = importlib.util.spec_from_file_location("build_toyworld_cli_under_test", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    calls: list[bool] = []
    monkeypatch.setattr(
        cli,
        "build_toyworld",
        lambda *a, compile_transformer, **k: calls.append(compile_transformer) or {},
    )
    work = str(tmp_path / "w")
    assert cli.main(["--stages", "autoencoder", "--work", work]) == 0
    assert cli.main(["--stages", "autoencoder", "--work", work, "--no-compile"]) == 0
    assert calls == [True, False]
