"""The toy world's training loop: a few steps on the real architecture, resumable, and the
compiled path's fallback where no C++ compiler exists."""

from __future__ import annotations

import shutil

import torch

from fade.backbones.builders import build_flux_pipeline
from fade.toyworld import training
from fade.toyworld.data import make_scene_set
from fade.toyworld.spec import MAX_TOKENS, TOY_ARCH, ModelSchedule
from fade.toyworld.training import compiled_for_training, encode_dataset, train_model
from fade.toyworld.vocabulary import vocabulary


def _transformer_weights(pipeline) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipeline.transformer.state_dict().items()}


def test_train_model_moves_the_weights_and_resumes_from_its_checkpoint(tmp_path) -> None:
    pipeline = build_flux_pipeline(TOY_ARCH, vocabulary(), seed=0)
    data = make_scene_set(16, seed=0)
    latents = encode_dataset(pipeline, data)
    schedule = ModelSchedule(steps=3, batch_size=4, warmup_steps=1, checkpoint_every=2)
    before = _transformer_weights(pipeline)
    seen: list[int] = []
    train_model(
        pipeline, latents, data, schedule, tmp_path, 0, MAX_TOKENS, on_checkpoint=seen.append
    )
    after = _transformer_weights(pipeline)
    assert seen == [2, 3]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not pipeline.transformer.training  # EMA weights loaded, ready to sample
    state = torch.load(tmp_path / "model.pt", weights_only=False)
    assert state["step"] == 3

    train_model(pipeline, latents, data, schedule, tmp_path, 0, MAX_TOKENS)  # nothing left
    resumed = _transformer_weights(pipeline)
    assert all(torch.equal(state["ema"]["transformer"][k], resumed[k]) for k in resumed)


def test_compiling_falls_back_to_the_module_without_a_cpp_compiler(monkeypatch) -> None:
    module = torch.nn.Linear(2, 2)
    monkeypatch.setattr(training.shutil, "which", lambda name: None)
    assert compiled_for_training(module) is module
    monkeypatch.undo()
    if shutil.which("c++") or shutil.which("g++"):
        assert compiled_for_training(module) is not module  # compiled lazily, on first call
