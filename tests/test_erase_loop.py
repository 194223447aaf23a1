"""The single-process erasure loop runs on tiny models and changes only what it should."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fade.backbones import wrap_pipeline
from fade.concepts import ConceptSpec, build_prompt_sets
from fade.config import EraseConfig
from fade.erase import DenoiserInput, Eraser
from fade.losses import preservation_loss
from tests.tiny import TINY_SIZE, tiny_flux_pipeline, tiny_sd_pipeline

SPEC = ConceptSpec(
    "circle",
    category="object",
    synonyms=("star",),
    anchor="object",
    article=False,
    templates=("a red {}", "a photo of a blue {}", "a green striped {}"),
)
TINY_ERASE = EraseConfig(
    steps=3,
    batch_size=2,
    saliency_batches=1,
    sample_steps=2,
    disc_pretrain_steps=1,
    eval_every=2,
    sparsity=0.3,
    lora_rank=2,
)


@pytest.mark.parametrize("builder", [tiny_flux_pipeline, tiny_sd_pipeline])
def test_loop_trains_only_the_adapter(builder) -> None:
    pipeline = builder()
    pipeline.set_progress_bar_config(disable=True)
    backbone = wrap_pipeline(pipeline)
    base = {k: v.clone() for k, v in backbone.denoiser.state_dict().items()}
    prompts = build_prompt_sets([SPEC], None, n_per_concept=8, n_retain=4, seed=0)
    eraser = Eraser(
        backbone, prompts, dataclasses.replace(TINY_ERASE, lr=0.05), size=(TINY_SIZE, TINY_SIZE)
    )
    selection = eraser.setup()
    assert selection.selected
    accuracy = eraser.pretrain_discriminator()
    assert 0.0 <= accuracy <= 1.0
    result = eraser.train(progress=False)
    assert result.steps_run >= 2
    losses = [log.loss for log in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(log.heldout_accuracy is not None for log in result.history) or result.stopped_early
    after = backbone.denoiser.state_dict()
    for key, value in base.items():  # base weights untouched; peft renames wrapped ones
        lookup = (
            key
            if key in after
            else key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        )
        assert torch.equal(after[lookup], value), key
    moved = [p for p in eraser.strategy.named.values() if p.abs().sum() > 0]
    assert moved, "the adapter did not train"


def test_ablation_switches_turn_terms_off() -> None:
    pipeline = tiny_flux_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    backbone = wrap_pipeline(pipeline)
    prompts = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=2, seed=0)
    config = dataclasses.replace(TINY_ERASE, w_rem=0.0, lam=0.0, sparsity=1.0, steps=1)
    eraser = Eraser(backbone, prompts, config, size=(TINY_SIZE, TINY_SIZE))
    eraser.setup()
    log = eraser.step(0)
    assert log.removal == 0.0 and log.preservation == 0.0 and log.discriminator == 0.0
    assert log.distillation >= 0.0
    assert len(eraser.selection.selected) == len(eraser.selection.scores)


def test_negative_guidance_moves_the_distillation_target_away_from_the_concept() -> None:
    """η = 0 is plain self-distillation; η > 0 adds η·(f(y_c) − f(y_s)) to the distance."""
    prompts = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=2, seed=0)
    losses = {}
    for eta in (0.0, 2.0):
        backbone = wrap_pipeline(tiny_flux_pipeline())  # the same seeded weights each time
        config = dataclasses.replace(
            TINY_ERASE, w_rem=0.0, lam=0.0, sparsity=1.0, steps=1, negative_guidance=eta
        )
        eraser = Eraser(backbone, prompts, config, size=(TINY_SIZE, TINY_SIZE), seed=3)
        eraser.setup()  # a fresh LoRA (B = 0): the adapted model is still the base model
        losses[eta] = eraser.step(0).distillation
    # With the adapter at zero, f' = f, so the loss is ‖f(y_c) − target‖²: (1 + η)² times larger.
    assert losses[2.0] == pytest.approx(9.0 * losses[0.0], rel=1e-3)


def test_early_stop_needs_consecutive_checks_at_chance() -> None:
    pipeline = tiny_flux_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    backbone = wrap_pipeline(pipeline)
    prompts = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=2, seed=0)
    config = dataclasses.replace(
        TINY_ERASE, steps=8, eval_every=1, early_stop_margin=0.5, early_stop_patience=3
    )
    eraser = Eraser(backbone, prompts, config, size=(TINY_SIZE, TINY_SIZE))
    eraser.setup()
    result = eraser.train(progress=False)  # margin 0.5: every check counts as chance
    assert result.stopped_early and result.steps_run == 3


def test_paired_preservation_holds_retain_prompts_at_the_concepts_states() -> None:
    """The extra L_pres term is 0 while the adapter is the identity and grows once it moves."""
    backbone = wrap_pipeline(tiny_flux_pipeline())
    prompts = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=4, seed=0)
    config = dataclasses.replace(TINY_ERASE, w_rem=0.0, paired_preservation=True)
    eraser = Eraser(backbone, prompts, config, size=(TINY_SIZE, TINY_SIZE))
    eraser.setup()
    target = backbone.encode(prompts.target[:2])
    z, sigma = eraser._trajectory_state(target)
    neutral = backbone.encode(prompts.neutral[:2])
    held = eraser._held_states(neutral, eraser._x0_of(neutral), z, sigma, [0, 1])
    paired = held[-1]
    assert paired.z is z and paired.sigma is sigma and len(held) == 3  # neutral, retain, paired

    def paired_loss() -> float:
        (mine,), (original,) = eraser._predict([paired]), eraser._predict([paired], adapter=False)
        return float(preservation_loss(mine, original).detach())

    assert paired_loss() == 0.0
    with torch.no_grad():
        for p in eraser.strategy.named.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.3)
    assert paired_loss() > 0.0


@pytest.mark.parametrize("make_pipeline", [tiny_flux_pipeline, tiny_sd_pipeline])
def test_one_batched_call_predicts_what_a_call_per_input_predicts(make_pipeline) -> None:
    """The step runs every loss term's denoiser input in one call (adapter on, then off): the
    rows must come back in order and equal to separate calls, at different sigmas and prompts."""
    backbone = wrap_pipeline(make_pipeline())
    prompts = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=4, seed=0)
    eraser = Eraser(backbone, prompts, TINY_ERASE, size=(TINY_SIZE, TINY_SIZE))
    eraser.setup()
    with torch.no_grad():
        for p in eraser.strategy.named.values():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.3)
    inputs = [
        DenoiserInput(eraser._noise(2), torch.tensor([0.9, 0.9]), backbone.encode(texts))
        for texts in (prompts.target[:2], prompts.retain[:2])
    ]
    inputs.append(DenoiserInput(eraser._noise(1), torch.tensor([0.4]), backbone.encode(["a"])))
    for adapter in (True, False):
        together = eraser._predict(inputs, adapter=adapter)
        alone = [eraser._predict([one], adapter=adapter)[0] for one in inputs]
        assert [t.shape for t in together] == [a.shape for a in alone]
        for t, a in zip(together, alone, strict=True):
            torch.testing.assert_close(t, a, rtol=1e-4, atol=1e-5)
    on, off = eraser._predict(inputs[:1]), eraser._predict(inputs[:1], adapter=False)
    assert not torch.allclose(on[0], off[0]) and on[0].requires_grad and not off[0].requires_grad


@pytest.mark.parametrize(
    ("paired_prompts", "n_retain"), [("retain", 8), ("neighbours", 8), ("neighbours", 0)]
)
def test_paired_preservation_holds_the_prompts_it_is_told_to(
    paired_prompts, n_retain, monkeypatch
) -> None:
    """neighbours: each row's own sentence with a neighbour in the concept's place; a row
    without one falls back to a retain prompt, or with no retain prompts to its own neutral
    prompt. retain: retain prompts only."""
    from fade.catalog import load_catalog

    catalog = load_catalog("toy")
    prompts = build_prompt_sets(
        [catalog.get("diamond")], catalog, n_per_concept=4, n_retain=n_retain
    )
    prompts.contrast[2] = ""
    backbone = wrap_pipeline(tiny_flux_pipeline())
    config = dataclasses.replace(
        TINY_ERASE, paired_preservation=True, paired_prompts=paired_prompts
    )
    eraser = Eraser(backbone, prompts, config, size=(TINY_SIZE, TINY_SIZE))
    eraser.setup()
    encoded: list[list[str]] = []
    encode = backbone.encode
    monkeypatch.setattr(backbone, "encode", lambda texts: encoded.append(texts) or encode(texts))
    assert eraser.paired_prompts_exist
    eraser._paired_prompts([2, 1, 0])
    (held,) = encoded
    if paired_prompts == "neighbours":
        for position, row in ((1, 1), (2, 0)):  # the row's own template, some neighbour in it
            options = [prompts.contrast_with(row, phrase) for phrase in prompts.neighbours[0]]
            assert held[position] in options
        assert held[0] in (prompts.retain or [prompts.neutral[2]])  # row 2's own fallback
    else:
        assert all(prompt in prompts.retain for prompt in held)


def _saliency_contrasts_seen(prompts, contrast: bool, monkeypatch) -> dict:
    """Set up an eraser with erase.saliency_contrast = `contrast`; returns what it handed
    saliency as `contrasts`."""
    import fade.erase as erase_module

    seen = {}
    locate = erase_module.locate_concept

    def spy(*args, contrasts=None, **kwargs):
        seen["contrasts"] = contrasts
        return locate(*args, contrasts=contrasts, **kwargs)

    monkeypatch.setattr(erase_module, "locate_concept", spy)
    config = dataclasses.replace(TINY_ERASE, saliency_contrast=contrast)
    Eraser(
        wrap_pipeline(tiny_flux_pipeline()), prompts, config, size=(TINY_SIZE, TINY_SIZE)
    ).setup()
    return seen


@pytest.mark.parametrize("contrast", [True, False])
def test_saliency_over_neighbours_ranks_against_each_neighbours_sentences(
    contrast, monkeypatch
) -> None:
    """erase.saliency_contrast: saliency gets one list per neighbour, each target row's own
    sentence with that neighbour in the concept's place; off, none."""
    from fade.catalog import load_catalog

    catalog = load_catalog("toy")
    prompts = build_prompt_sets([catalog.get("diamond")], catalog, n_per_concept=4, n_retain=4)
    seen = _saliency_contrasts_seen(prompts, contrast, monkeypatch)
    if not contrast:
        assert seen["contrasts"] is None
        return
    rows = range(len(prompts.target))
    assert len(seen["contrasts"]) == len(prompts.neighbours[0]) > 1
    for phrase, sentences in zip(prompts.neighbours[0], seen["contrasts"], strict=True):
        assert sentences == [
            prompts.contrast_with(row, phrase) or prompts.neutral[row] for row in rows
        ]
        assert not set(sentences) & set(prompts.target)


def test_saliency_over_neighbours_without_neighbours_is_plain_saliency(monkeypatch) -> None:
    prompts = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=2, seed=0)
    seen = _saliency_contrasts_seen(prompts, True, monkeypatch)
    assert not any(prompts.neighbours) and seen["contrasts"] is None


@pytest.mark.parametrize(
    ("paired_prompts", "n_retain", "held"),
    [("neighbours", 0, True), ("retain", 0, False), ("retain", 4, True)],
)
def test_a_step_adds_paired_preservation_when_there_is_something_to_hold(
    paired_prompts, n_retain, held, monkeypatch
) -> None:
    """Neighbour sentences are enough without retain prompts; retain mode needs retain prompts."""
    from fade.catalog import load_catalog

    catalog = load_catalog("toy")
    prompts = build_prompt_sets(
        [catalog.get("diamond")], catalog, n_per_concept=4, n_retain=n_retain
    )
    config = dataclasses.replace(
        TINY_ERASE, paired_preservation=True, paired_prompts=paired_prompts
    )
    eraser = Eraser(
        wrap_pipeline(tiny_flux_pipeline()), prompts, config, size=(TINY_SIZE, TINY_SIZE)
    )
    eraser.setup()
    calls: list[list[int]] = []
    paired = eraser._paired_prompts
    monkeypatch.setattr(eraser, "_paired_prompts", lambda rows: calls.append(rows) or paired(rows))
    eraser.step(0)
    assert bool(calls) == held


def test_unset_settings_come_from_the_recipe() -> None:
    """No surrogate: the remove recipe; a surrogate: redirect (conditioning projections);
    anything set explicitly wins."""
    backbone = wrap_pipeline(tiny_flux_pipeline())
    plain = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=2, seed=0)
    eraser = Eraser(backbone, plain, EraseConfig(), size=(TINY_SIZE, TINY_SIZE))
    resolved = eraser.config
    assert (resolved.recipe, resolved.candidates, resolved.steps, resolved.lr) == (
        "remove",
        "blocks",
        140,
        6e-3,
    )
    assert resolved.saliency_contrast is True
    redirected = build_prompt_sets(
        [dataclasses.replace(SPEC, surrogate="square")], None, n_per_concept=4, seed=0
    )
    eraser = Eraser(backbone, redirected, EraseConfig(steps=7), size=(TINY_SIZE, TINY_SIZE))
    assert eraser.config.recipe == "redirect" and eraser.config.candidates == "conditioning"
    assert eraser.config.paired_preservation and eraser.config.steps == 7
    assert (eraser.config.lr, eraser.config.lam) == (3e-3, 40.0)
    assert eraser.config.saliency_contrast is False
    eraser = Eraser(backbone, redirected, EraseConfig(recipe="remove"), size=(TINY_SIZE, TINY_SIZE))
    assert eraser.config.candidates == "blocks" and eraser.config.w_rem == 0.1
    several = build_prompt_sets(
        [SPEC, dataclasses.replace(SPEC, name="square", synonyms=())], None, n_per_concept=4
    )
    eraser = Eraser(backbone, several, EraseConfig(), size=(TINY_SIZE, TINY_SIZE))
    assert (eraser.config.recipe, eraser.config.candidates, eraser.config.sparsity) == (
        "mass",
        "all",
        1.0,
    )
    assert eraser.config.steps == 600  # the floor; 75 per concept above eight concepts


def test_the_mass_recipe_gives_each_concept_its_steps() -> None:
    from fade.recipes import resolve_erase

    assert resolve_erase(EraseConfig(), False, concepts=8).steps == 600
    assert resolve_erase(EraseConfig(), False, concepts=10).steps == 750
    assert resolve_erase(EraseConfig(), False, concepts=30).steps == 2250
    assert resolve_erase(EraseConfig(steps=50), False, concepts=30).steps == 50


def test_a_checkpoint_restores_the_loop_and_training_goes_on_from_its_step(tmp_path) -> None:
    """Checkpoints are handed out every N steps; one written to disk and read into a fresh
    eraser restores the adapter, both optimizers and D exactly, reuses the saved module
    selection (no new ranking), and training continues from the saved step to the end."""
    from fade.config import FadeConfig
    from fade.distributed.checkpoints import read_checkpoint, write_checkpoint

    def fresh() -> Eraser:
        pipeline = tiny_flux_pipeline()
        pipeline.set_progress_bar_config(disable=True)
        prompts = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=2, seed=0)
        config = dataclasses.replace(TINY_ERASE, steps=6, eval_every=100)
        return Eraser(wrap_pipeline(pipeline), prompts, config, size=(TINY_SIZE, TINY_SIZE))

    first = fresh()
    selection = first.setup()
    states: list[dict] = []
    result = first.train(
        progress=False, checkpoint=lambda r: states.append(first.state_dict(r)), checkpoint_every=2
    )
    assert [s["steps_run"] for s in states] == [2, 4]  # step 6 is the end: the caller saves it
    assert result.steps_run == 6
    write_checkpoint(tmp_path, states[-1], selection, FadeConfig())

    resumed = fresh()
    loaded, state, progress = read_checkpoint(tmp_path)
    assert progress["steps_run"] == 4 and loaded.selected == selection.selected
    resumed.setup(loaded, state["adapter"])
    partial = resumed.load_state_dict(state)
    assert partial.steps_run == 4 and len(partial.history) == 4
    restored = resumed.state_dict(partial)
    for name, value in states[-1]["adapter"].items():
        assert torch.equal(restored["adapter"][name], value), name
    for name, value in states[-1]["discriminator"].items():
        assert torch.equal(restored["discriminator"][name], value), name
    assert restored["optimizer"]["step"] == 4
    for key in ("exp_avg", "exp_avg_sq"):
        for name, value in states[-1]["optimizer"][key].items():
            assert torch.equal(restored["optimizer"][key][name], value), name
    done = resumed.train(progress=False, result=partial)
    assert done.steps_run == 6 and [log.step for log in done.history] == list(range(6))
    after = resumed.state_dict(done)["adapter"]
    assert any(not torch.equal(after[n], v) for n, v in states[-1]["adapter"].items())


def test_paired_preservation_deals_every_neighbour_in_turn() -> None:
    """Each round holds every neighbour once, in the rows' own templates: a fixed neighbour
    per row let one seed's rows never name the triangle, and the erasure took it."""
    from fade.catalog import load_catalog

    catalog = load_catalog("toy")
    prompts = build_prompt_sets([catalog.get("diamond")], catalog, n_per_concept=4, n_retain=0)
    phrases = prompts.neighbours[0]
    assert len(phrases) > 3 and "circle" in phrases and "diamond" not in phrases
    backbone = wrap_pipeline(tiny_flux_pipeline())
    config = dataclasses.replace(TINY_ERASE, paired_preservation=True, paired_prompts="neighbours")
    eraser = Eraser(backbone, prompts, config, size=(TINY_SIZE, TINY_SIZE))
    rounds = 3
    rows = [index % 4 for index in range(rounds * len(phrases))]
    held = [eraser._neighbour_sentence(row) for row in rows]
    for row, sentence in zip(rows, held, strict=True):
        assert sentence in [prompts.contrast_with(row, phrase) for phrase in phrases]
    for start in range(0, len(held), len(phrases)):
        chunk = slice(start, start + len(phrases))
        named = [
            next(p for p in phrases if prompts.contrast_with(row, p) == sentence)
            for row, sentence in zip(rows[chunk], held[chunk], strict=True)
        ]
        assert sorted(named) == sorted(phrases)  # every neighbour once a round


def _two_concept_eraser(balance: float, seed: int = 3, setup: bool = True, **settings) -> Eraser:
    backbone = wrap_pipeline(tiny_flux_pipeline())  # the same seeded weights each time
    square = dataclasses.replace(SPEC, name="square", synonyms=())
    prompts = build_prompt_sets([SPEC, square], None, n_per_concept=4, n_retain=2, seed=0)
    config = dataclasses.replace(
        TINY_ERASE,
        w_rem=0.0,
        lam=0.0,
        sparsity=1.0,
        negative_guidance=2.0,
        balance=balance,
        **settings,
    )
    eraser = Eraser(backbone, prompts, config, size=(TINY_SIZE, TINY_SIZE), seed=seed)
    if setup:
        eraser.setup()  # a fresh LoRA (B = 0): the adapted model is still the base model
    return eraser


def test_balance_measures_what_is_left_of_each_concept_and_favours_the_laggard() -> None:
    """`erase.balance`: an untouched concept measures exactly 1 left (its L_dist is what the
    unchanged model scores); the weights are (left / mean left) ** balance, so a concept the
    others outpace gets more of the pull, and 0 weighs all alike."""
    eraser = _two_concept_eraser(balance=3.0)
    assert eraser.balancing and eraser.left.tolist() == [1.0, 1.0]
    unbalanced = _two_concept_eraser(balance=0.0)
    # Equal weights give the plain mean: the same loss as without balancing, on the same rows.
    assert eraser.step(0).distillation == pytest.approx(unbalanced.step(0).distillation, rel=1e-5)
    assert eraser.left.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)  # nothing had moved yet
    eraser.left = torch.tensor([0.9, 0.45], dtype=torch.float64)
    weights = eraser._balance_weights()
    assert weights.tolist() == pytest.approx([(0.9 / 0.675) ** 3, (0.45 / 0.675) ** 3])
    assert weights[0] / weights[1] == pytest.approx(8.0)
    assert not unbalanced.balancing


def test_balance_follows_each_concept_as_training_moves_it_and_is_checkpointed() -> None:
    eraser = _two_concept_eraser(balance=3.0, lr=0.003, steps=6)
    state = eraser.state_dict(eraser.train(progress=False))
    left = eraser.left.tolist()
    assert all(0.0 < value < 1.0 for value in left), left  # both moved away from the concept
    assert state["concepts_left"] == left
    resumed = _two_concept_eraser(balance=3.0, lr=0.003, steps=6, setup=False)
    resumed.setup(eraser.selection, state["adapter"])
    resumed.load_state_dict(state)
    assert resumed.left.tolist() == state["concepts_left"]


def test_one_concept_is_never_balanced_and_only_the_mass_recipe_balances() -> None:
    from fade.recipes import resolve_erase

    assert resolve_erase(EraseConfig(), False, concepts=30).balance == 3.0
    assert resolve_erase(EraseConfig(), False, concepts=1).balance == 0.0
    assert resolve_erase(EraseConfig(), True, concepts=3).balance == 0.0
    assert resolve_erase(EraseConfig(balance=1.0), False, concepts=30).balance == 1.0
    backbone = wrap_pipeline(tiny_flux_pipeline())
    prompts = build_prompt_sets([SPEC], None, n_per_concept=4, n_retain=2, seed=0)
    config = dataclasses.replace(TINY_ERASE, balance=3.0)
    assert not Eraser(backbone, prompts, config, size=(TINY_SIZE, TINY_SIZE)).balancing
