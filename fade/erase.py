"""The erasure loop on one process: what each Ray Train worker runs (DESIGN.md section 2).

`Eraser` has a visible life cycle: `setup()` locates the concept (saliency), attaches the sparse
LoRA adapter and builds the discriminator; `pretrain_discriminator()` teaches D to tell the
concept's x̂0 from neutral x̂0; `train()` runs the objective until D's held-out accuracy is near
chance or `steps` run out. Supports: any backbone (FLUX, SD), one or K concepts (K+1-way D),
surrogates, the ablation switches (w_rem=0, lam=0, sparsity=1). How the adapter is held and
updated across workers is injected (`strategy`: replicated, FSDP2 or DeepSpeed ZeRO), and so is
the discriminator's gradient averaging (`all_reduce_mean`), so the same loop runs alone or
distributed.
Raises ValueError on inconsistent inputs; user-facing validation happens before (fade.plan).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from fade.adapters import attach_lora, named_lora_parameters
from fade.backbones import Backbone, Conditioning
from fade.concepts import PromptSets, neighbour_rows
from fade.config import EraseConfig
from fade.discriminator import ConceptDiscriminator, discriminator_loss
from fade.distributed.strategies import AdapterStrategy, average_gradients
from fade.losses import (
    adapter_disabled,
    distillation_loss,
    early_sigmas,
    preservation_loss,
    removal_loss,
)
from fade.recipes import resolve_erase
from fade.saliency import SaliencySelection, locate_concept

logger = logging.getLogger(__name__)

#: How far a concept's `left` moves towards the newest measurement of it (`erase.balance`).
BALANCE_RATE = 0.05


@dataclass
class DenoiserInput:
    """Latents at per-row sigmas and the prompts they are denoised for."""

    z: torch.Tensor
    sigma: torch.Tensor
    cond: Conditioning


@dataclass
class StepLog:
    step: int
    loss: float
    removal: float
    preservation: float
    distillation: float
    discriminator: float
    heldout_accuracy: float | None = None


@dataclass
class EraseResult:
    selection: SaliencySelection
    history: list[StepLog] = field(default_factory=list)
    stopped_early: bool = False
    steps_run: int = 0
    #: Consecutive held-out checks at chance so far (early stopping's count).
    at_chance: int = 0


def split_rows(count: int, seed: int, heldout_fraction: float = 0.2) -> tuple[list[int], list[int]]:
    """Held-out and training rows of `count` prompt rows: a seeded permutation, so the driver
    and every worker draw the same split."""
    split = torch.Generator().manual_seed(seed)
    rows = torch.randperm(count, generator=split).tolist()
    held = max(1, int(count * heldout_fraction)) if count > 1 else 0
    return rows[:held], rows[held:] or rows


def stride_shard(rows: list[int], rank: int, world_size: int) -> list[int]:
    """Worker `rank`'s share of the training rows: every `world_size`-th from `rank` (the rows
    are already a random permutation, so each share is a random sample of every concept)."""
    return rows[rank::world_size]


class Eraser:
    def __init__(
        self,
        backbone: Backbone,
        prompts: PromptSets,
        config: EraseConfig,
        size: tuple[int, int] = (32, 32),
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        all_reduce_mean: Callable[[torch.Tensor], None] | None = None,
        heldout_fraction: float = 0.2,
        strategy: AdapterStrategy | None = None,
        shard: list[int] | None = None,
    ):
        """`shard`: this worker's training rows, as Ray Data handed them out
        (fade/distributed/prompts.py); None: every `world_size`-th from `rank`, the same rows."""
        self.backbone, self.prompts, self.size = backbone, prompts, size
        # Settings left null come from the recipe (remove, or redirect to a surrogate).
        self.config = resolve_erase(config, prompts.has_surrogate, len(prompts.concepts))
        self.seed = seed
        self.all_reduce_mean = all_reduce_mean if world_size > 1 else None
        self.strategy = strategy or AdapterStrategy(all_reduce_mean=self.all_reduce_mean)
        self.resumed = False  # set by setup(): whether it was handed a checkpoint's adapter
        # Same split on every worker; each then trains on its own shard of the training rows.
        self.heldout_rows, train_rows = split_rows(len(prompts.target), seed, heldout_fraction)
        if shard is None:
            shard = stride_shard(train_rows, rank, world_size)
        self.train_rows = shard or train_rows
        self.generator = torch.Generator().manual_seed(seed * 1009 + rank)
        # Under FSDP and ZeRO-3 every forward gathers weights from all workers, so all must
        # sample the same number of steps: the trajectory point then comes from a generator
        # they share (the noise stays each worker's own).
        shared = torch.Generator().manual_seed(seed * 1009 + 7919)
        self.point_generator = shared if self.strategy.lockstep else self.generator
        self.labels = torch.tensor(prompts.concept_of)
        # What paired preservation holds, decided once: neighbour sentences where rows have
        # them, else retain prompts (or, without any, the row's neutral prompt).
        self.holds_neighbours = neighbour_rows(prompts.contrast, self.config.paired_prompts) > 0
        self.paired_prompts_exist = bool(prompts.retain) or self.holds_neighbours
        # Per concept, the neighbours not yet dealt in this round (see _neighbour_sentence).
        self._neighbour_decks: dict[int, list[int]] = {}
        # Per concept, how much of it is left (see _balance_weights); 1 = not moved yet.
        self.left = torch.ones(len(prompts.concepts), dtype=torch.float64)

    # --- life cycle ----------------------------------------------------------------------------

    def setup(
        self,
        selection: SaliencySelection | None = None,
        adapter: dict[str, torch.Tensor] | None = None,
    ) -> SaliencySelection:
        """Rank the modules (or take `selection` and the `adapter` weights of a resumed run),
        attach LoRA, hand the model to the strategy, build D."""
        cfg = self.config
        self.strategy.configure(self.backbone.denoiser)
        self.selection = selection or locate_concept(
            self.backbone,
            self.prompts.target,
            self.prompts.neutral,
            cfg.sparsity,
            batches=cfg.saliency_batches,
            batch_size=cfg.batch_size,
            sample_steps=cfg.sample_steps,
            size=self.size,
            seed=int(self._randint(2**31)),
            reduce=self._mean_scores if self.all_reduce_mean else None,
            group=cfg.candidates,
            contrasts=self._saliency_contrasts() if cfg.saliency_contrast else None,
        )
        torch.manual_seed(self.seed)  # identical adapter and D initialisation on every worker
        attach_lora(self.backbone, self.selection.selected, cfg.lora_rank, cfg.lora_alpha)
        named = named_lora_parameters(self.backbone)
        if adapter is not None:
            # Before the strategy shards them: every strategy reads whole weights from here.
            missing = set(adapter) ^ set(named)
            if missing:
                raise ValueError(f"checkpoint and adapter disagree on {sorted(missing)[:3]}")
            with torch.no_grad():
                for name, value in adapter.items():
                    named[name].copy_(value)
        channels = self._spatial(self._noise(1)).shape[1]
        self.discriminator = ConceptDiscriminator(channels, len(self.prompts.concepts))
        self.discriminator.to(self.backbone.device)
        self.strategy.prepare(self.backbone.denoiser, named, cfg.lr)
        self.resumed = adapter is not None
        if self.resumed:
            self.strategy.restore(adapter)
        self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=cfg.disc_lr)
        return self.selection

    def pretrain_discriminator(self, steps: int | None = None) -> float:
        """Fit D on the current model's x̂0 before erasing; returns its held-out accuracy."""
        for _ in range(self.config.disc_pretrain_steps if steps is None else steps):
            concept_x0, labels, neutral_x0 = self._discriminator_batch(self.train_rows)
            self._update_discriminator(concept_x0, labels, neutral_x0)
        return self.heldout_accuracy()

    def state_dict(self, result: EraseResult) -> dict:
        """Everything training needs to continue, in a form any worker count and strategy can
        resume: whole adapter weights and AdamW moments by parameter name, D and its
        optimizer, and where the loop stood. Collective: every worker calls it."""
        return {
            "adapter": self.strategy.adapter_state(),
            "optimizer": self.strategy.optimizer_state(),
            "discriminator": self.discriminator.state_dict(),
            "disc_optimizer": self.disc_optimizer.state_dict(),
            "steps_run": result.steps_run,
            "stopped_early": result.stopped_early,
            "at_chance": result.at_chance,
            "history": [vars(log) for log in result.history],
            "concepts_left": self.left.tolist(),
        }

    def load_state_dict(self, state: dict) -> EraseResult:
        """Restore the optimizers, D and the loop after `setup(selection, state["adapter"])`;
        returns the result so far."""
        if not self.resumed:
            raise ValueError("load_state_dict needs setup(selection, state['adapter']) first")
        self.strategy.load_optimizer_state(state["optimizer"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        if "concepts_left" in state:  # checkpoints from before balancing start level
            self.left = torch.tensor(state["concepts_left"], dtype=torch.float64)
        return EraseResult(
            self.selection,
            [StepLog(**log) for log in state["history"]],
            state["stopped_early"],
            state["steps_run"],
            state["at_chance"],
        )

    def train(
        self,
        progress: bool = True,
        result: EraseResult | None = None,
        checkpoint: Callable[[EraseResult], None] | None = None,
        checkpoint_every: int = 0,
    ) -> EraseResult:
        """Run the remaining steps (all of them, or those after a resumed `result`); every
        `checkpoint_every` steps, hand the result so far to `checkpoint`."""
        result = result or EraseResult(self.selection)
        if result.stopped_early:
            return result
        steps = range(result.steps_run, self.config.steps)
        bar = tqdm(
            steps,
            desc="erase",
            disable=not progress,
            initial=result.steps_run,
            total=self.config.steps,
        )
        at_chance = result.at_chance
        for step in bar:
            log = self.step(step)
            if (step + 1) % self.config.eval_every == 0:
                log.heldout_accuracy = self.heldout_accuracy()
            result.history.append(log)
            result.steps_run = step + 1
            bar.set_postfix(loss=f"{log.loss:.4f}", d_loss=f"{log.discriminator:.3f}")
            # Without the adversary D never learns after pre-training: no stopping on it.
            if self.config.w_rem > 0 and log.heldout_accuracy is not None:
                at_chance = at_chance + 1 if self._near_chance(log.heldout_accuracy) else 0
            result.at_chance = at_chance
            if at_chance >= self.config.early_stop_patience:
                result.stopped_early = True
                logger.info(
                    "D is at chance (%.2f) after %d steps: stopping", log.heldout_accuracy, step + 1
                )
                break
            due = checkpoint_every and (step + 1) % checkpoint_every == 0
            # The final state is saved by the caller, with the adapter.
            if checkpoint is not None and due and step + 1 < self.config.steps:
                checkpoint(result)
        return result

    # --- one step ------------------------------------------------------------------------------

    def step(self, step: int) -> StepLog:
        cfg = self.config
        rows = self._rows(self.train_rows)
        target, neutral, surrogate = self._conditions(rows)
        z, sigma = self._trajectory_state(target)
        neutral_x0 = self._x0_of(neutral)
        held = self._held_states(neutral, neutral_x0, z, sigma, rows) if cfg.lam else []
        references = []
        if cfg.w_dist:
            references.append(DenoiserInput(z, sigma, surrogate))
            if cfg.negative_guidance or self.balancing:
                references.append(DenoiserInput(z, sigma, target))
        base = self._predict([*references, *held], adapter=False)
        prediction, *adapted = self._predict([DenoiserInput(z, sigma, target), *held])
        concept_x0 = self.backbone.x0_from_prediction(z, sigma, prediction)
        zero = torch.zeros((), device=z.device)
        removal = removal_loss(self.discriminator, self._spatial(concept_x0)) if cfg.w_rem else zero
        distill = zero
        if cfg.w_dist:
            reference = base[0]
            if cfg.negative_guidance:
                reference = reference - cfg.negative_guidance * (base[1] - reference)
            if self.balancing:
                distill = self._balanced_distillation(prediction, base[1], reference, rows)
            else:
                distill = distillation_loss(prediction, reference)
        preserve = zero
        for mine, original in zip(adapted, base[len(references) :], strict=True):
            preserve = preserve + preservation_loss(mine, original)
        loss = cfg.w_rem * removal + cfg.lam * preserve + cfg.w_dist * distill
        self.strategy.update(loss)
        d_loss = 0.0
        if cfg.w_rem:
            d_loss = self._update_discriminator(
                self._spatial(concept_x0.detach()), self.labels[rows], self._spatial(neutral_x0)
            )
        return StepLog(step, loss.item(), removal.item(), preserve.item(), distill.item(), d_loss)

    @property
    def balancing(self) -> bool:
        """Whether L_dist is weighted per concept (`erase.balance`, several concepts)."""
        return bool(self.config.balance) and len(self.prompts.concepts) > 1

    def _balanced_distillation(
        self,
        prediction: torch.Tensor,
        unchanged: torch.Tensor,
        reference: torch.Tensor,
        rows: list[int],
    ) -> torch.Tensor:
        """L_dist with each row weighted by its concept's share of what is left to erase.

        A row's "left" is its L_dist over the unchanged model's at the same state (1 before any
        change, (η/(1+η))² once the prediction is the anchor's, 0 at the target), so concepts and
        states of any scale compare. Why: in one adapter for thirty concepts, orange (held by
        red and yellow, its neighbours, at its own states) stayed at 100% while the other colours
        fell to 0-6%; equal weights leave such a concept where the neighbours' pull wins.
        """
        reference = reference.detach()
        per_row = (prediction - reference).pow(2).flatten(1).mean(1)
        before = (unchanged - reference).pow(2).flatten(1).mean(1).clamp_min(1e-12)
        concept_of = self.labels[rows]
        self._track_left((per_row.detach() / before).double().cpu(), concept_of)
        weights = self._balance_weights().to(per_row)
        return (weights[concept_of.to(per_row.device)] * per_row).mean()

    def _track_left(self, ratios: torch.Tensor, concept_of: torch.Tensor) -> None:
        """Move each concept's `left` towards this step's rows of it (all workers' rows, so
        every worker weighs alike); an exponential average over about 20 of its steps."""
        count = len(self.prompts.concepts)
        sums = torch.bincount(concept_of, weights=ratios, minlength=count)
        counts = torch.bincount(concept_of, minlength=count).double()
        if self.all_reduce_mean is not None:
            shared = torch.cat([sums, counts]).to(self.backbone.device)
            self.all_reduce_mean(shared)
            sums, counts = shared.cpu().split(count)
        seen = counts > 0
        self.left[seen] += BALANCE_RATE * (sums[seen] / counts[seen] - self.left[seen])

    def _balance_weights(self) -> torch.Tensor:
        """(left / mean left) ** balance, per concept: mean about 1, the laggards above."""
        return (self.left / self.left.mean()).pow(self.config.balance).float()

    def heldout_accuracy(self) -> float:
        """D's accuracy on held-out prompts, averaged over workers so all stop together."""
        concept_x0, labels, neutral_x0 = self._discriminator_batch(
            self.heldout_rows or self.train_rows
        )
        accuracy = self.discriminator.accuracy(concept_x0, labels.to(concept_x0.device), neutral_x0)
        if self.all_reduce_mean is not None:
            shared = torch.tensor([accuracy], dtype=torch.float64, device=self.backbone.device)
            self.all_reduce_mean(shared)
            accuracy = float(shared)
        return accuracy

    # --- pieces --------------------------------------------------------------------------------

    def _predict(self, inputs: list[DenoiserInput], adapter: bool = True) -> list[torch.Tensor]:
        """The denoiser on several inputs in one batched call: with the adapter (and grad), or
        the base model f_θ (adapter off, no grad). Why batched: a forward per loss term cost
        the toy world's step 10 to 18% more on one thread (706 against 579 ms, docs/erasure.md)."""
        if not inputs:
            return []
        z = torch.cat([i.z for i in inputs])
        sigma = torch.cat([i.sigma.to(z.device) for i in inputs])
        cond = Conditioning.cat([i.cond for i in inputs])
        if adapter:
            out = self.backbone.predict(z, sigma, cond, size=self.size)
        else:
            with torch.no_grad(), adapter_disabled(self.backbone):
                out = self.backbone.predict(z, sigma, cond, size=self.size)
        return list(out.split([len(i.z) for i in inputs]))

    def _held_states(
        self,
        neutral: Conditioning,
        neutral_x0: torch.Tensor,
        z: torch.Tensor,
        sigma: torch.Tensor,
        rows: list[int],
    ) -> list[DenoiserInput]:
        """What L_pres holds: neutral prompts and (if any) retain prompts at σ in [1 − t0, 1],
        each retain prompt on its own trajectory (a neighbour concept's states differ from the
        neutral prompt's, and those are the states its images pass through); with paired
        preservation, also other prompts at the concept's own states (`_paired_prompts`)."""
        batch = len(neutral)
        early = early_sigmas(batch, self.config.t0, self.generator).to(neutral_x0.device)
        held = [
            DenoiserInput(
                self.backbone.add_noise(neutral_x0, self._noise(batch), early), early, neutral
            )
        ]
        if self.prompts.retain:
            picks = self._randint(len(self.prompts.retain), batch).tolist()
            retain = self.backbone.encode([self.prompts.retain[i] for i in picks])
            z_retain = self.backbone.add_noise(self._x0_of(retain), self._noise(batch), early)
            held.append(DenoiserInput(z_retain, early, retain))
        if self.config.paired_preservation and self.paired_prompts_exist:
            held.append(DenoiserInput(z, sigma, self._paired_prompts(rows)))
        return held

    def _paired_prompts(self, rows: list[int]) -> Conditioning:
        """Paired preservation's prompts, held at the concept's own states: on exactly the
        states where the adapter is taught to change the concept's prediction, every other
        prompt's must stay, so the change can only follow the prompt. They are random retain
        prompts, or (paired_prompts = neighbours) each row's sentence with a neighbour in the
        concept's place, which differs from the concept's prompt in that one word only. A row
        without a neighbour holds a retain prompt, or with none (retain_prompts = 0) its own
        neutral prompt."""
        if self.prompts.retain:
            picks = self._randint(len(self.prompts.retain), len(rows)).tolist()
            prompts = [self.prompts.retain[i] for i in picks]
        else:
            prompts = [self.prompts.neutral[row] for row in rows]
        if self.holds_neighbours:
            contrast = [self._neighbour_sentence(row) for row in rows]
            prompts = [mine or theirs for mine, theirs in zip(contrast, prompts, strict=True)]
        return self.backbone.encode(prompts)

    def _saliency_contrasts(self) -> list[list[str]] | None:
        """For `erase.saliency_contrast`: one list per neighbour, each target row's sentence
        with that neighbour (a row's k-th of its concept's, cycled; the row's neutral prompt
        where the sentence would name an erased concept or no neighbour exists). None when no
        concept has a neighbour: there is nothing to rank against, so saliency stays plain."""
        p = self.prompts
        counts = [len(p.neighbours[c]) if p.neighbours else 0 for c in p.concept_of]
        lists = []
        for k in range(max(counts, default=0)):
            lists.append(
                [
                    (p.contrast_with(row, p.neighbours[c][k % n]) if n else "") or p.neutral[row]
                    for row, (c, n) in enumerate(zip(p.concept_of, counts, strict=True))
                ]
            )
        return lists or None

    def _neighbour_sentence(self, row: int) -> str:
        """Row `row`'s sentence with the next neighbour of its concept dealt from a shuffled
        round, so every neighbour is held equally often and in every template. Why: one fixed
        neighbour per row let a seed whose 32 rows never named the triangle take it (81 -> 9%)."""
        concept = self.prompts.concept_of[row]
        phrases = self.prompts.neighbours[concept] if self.prompts.neighbours else []
        if not phrases or not self.prompts.contrast[row]:
            return self.prompts.contrast[row]
        deck = self._neighbour_decks.setdefault(concept, [])
        if not deck:
            deck.extend(torch.randperm(len(phrases), generator=self.generator).tolist())
        return self.prompts.contrast_with(row, phrases[deck.pop()]) or self.prompts.contrast[row]

    def _trajectory_state(self, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """No-grad sampling from noise to a random step of the schedule: the model's own state."""
        height, width = self.size
        state = self.backbone.trajectory_state(
            self._noise(len(cond)),
            cond,
            self.config.sample_steps,
            self.generator,
            height,
            width,
            point_generator=self.point_generator,
        )
        sigma = torch.full((len(cond),), state.sigma, device=state.latents.device)
        return state.latents, sigma

    def _x0_of(self, cond: Conditioning) -> torch.Tensor:
        with torch.no_grad():
            z, sigma = self._trajectory_state(cond)
            prediction = self.backbone.predict(z, sigma, cond, size=self.size)
            return self.backbone.x0_from_prediction(z, sigma, prediction)

    def _discriminator_batch(self, pool: list[int]):
        rows = self._rows(pool)
        target, neutral, _ = self._conditions(rows)
        return (
            self._spatial(self._x0_of(target)),
            self.labels[rows],
            self._spatial(self._x0_of(neutral)),
        )

    def _update_discriminator(self, concept_x0, labels, neutral_x0) -> float:
        loss = discriminator_loss(
            self.discriminator, concept_x0, labels.to(concept_x0.device), neutral_x0
        )
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(self.discriminator.parameters(), self.all_reduce_mean)
        self.disc_optimizer.step()
        return float(loss.detach())

    def _mean_scores(self, scores: dict[str, float]) -> dict[str, float]:
        values = torch.tensor(
            list(scores.values()), dtype=torch.float64, device=self.backbone.device
        )
        self.all_reduce_mean(values)
        return dict(zip(scores, values.tolist(), strict=True))

    def _conditions(self, rows: list[int]) -> tuple[Conditioning, Conditioning, Conditioning]:
        p = self.prompts
        target = self.backbone.encode([p.target[i] for i in rows])
        neutral = self.backbone.encode([p.neutral[i] for i in rows])
        surrogate = self.backbone.encode([p.surrogate[i] for i in rows]) if p.surrogate else neutral
        return target, neutral, surrogate

    def _near_chance(self, accuracy: float) -> bool:
        return accuracy <= self.discriminator.chance() + self.config.early_stop_margin

    def _rows(self, pool: list[int]) -> list[int]:
        picks = self._randint(len(pool), self.config.batch_size).tolist()
        return [pool[i] for i in picks]

    def _randint(self, high: int, count: int = 1) -> torch.Tensor:
        return torch.randint(high, (count,), generator=self.generator)

    def _noise(self, batch: int) -> torch.Tensor:
        height, width = self.size
        return self.backbone.initial_noise(batch, height, width, self.generator)

    def _spatial(self, latents: torch.Tensor) -> torch.Tensor:
        return self.backbone.to_spatial(latents, *self.size)
