"""Command-line plumbing shared by every entry point: config file, dotted overrides, shortcuts.

Why one place: `jobs/erase.py`, `jobs/evaluate.py`, `tune/sweep.py` and `jobs/serve.py` all
take the same `--config FILE key=value ...` form, so a user learns it once and any setting of
`fade.config` is reachable from any command. Friendly flags (`--concepts`, `--out`, ...) are
only aliases for dotted keys.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from fade.config import FadeConfig, load_config
from fade.errors import ConfigError


@dataclass(frozen=True)
class Shortcut:
    """A friendly flag that sets one dotted config key."""

    flag: str
    key: str
    help: str
    is_switch: bool = False
    #: The value a switch sets (e.g. "false" for `--no-eval`).
    switch_value: str = "true"


MODEL_SHORTCUT = Shortcut(
    "--model", "model.path", "model: a hub id, a local diffusers folder, or 'toy'"
)
COMMON_SHORTCUTS = (
    MODEL_SHORTCUT,
    Shortcut("--concepts", "concepts.names", "concepts to erase, comma-separated"),
    Shortcut("--concept-set", "concepts.concept_set", "a catalog set name or a catalog file"),
    Shortcut("--catalog", "concepts.catalog", "catalog that concept names are looked up in"),
    Shortcut(
        "--surrogate",
        "concepts.surrogate",
        "concept the erased one should turn into (erase.recipe=auto then redirects)",
    ),
    Shortcut("--out", "output.dir", "run directory to write"),
    Shortcut("--overwrite", "output.overwrite", "replace an existing run directory", True),
    Shortcut("--seed", "seed", "random seed"),
    Shortcut("--num-workers", "distributed.num_workers", "Ray Train workers"),
    Shortcut("--strategy", "distributed.strategy", "ddp, fsdp, zero2 or zero3"),
)


def build_parser(
    prog: str,
    description: str,
    shortcuts: Sequence[Shortcut] = COMMON_SHORTCUTS,
    positional: tuple[str, str] = ("key=value", "dotted config overrides"),
) -> argparse.ArgumentParser:
    """An argparse parser with `--config`, `key=value` overrides and the given shortcuts;
    `positional` is the (metavar, help) of the positional arguments."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Any setting can be given as a dotted override, e.g. erase.t0=0.5 erase.lam=2 "
            "concepts.names=[circle,square]; see docs/configuration.md for every key."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config (default: built-in defaults)")
    for shortcut in shortcuts:
        if shortcut.is_switch:
            parser.add_argument(
                shortcut.flag, action="store_true", default=None, help=shortcut.help
            )
        else:
            parser.add_argument(
                shortcut.flag, metavar="VALUE", help=f"{shortcut.help} ({shortcut.key})"
            )
    parser.add_argument("overrides", nargs="*", metavar=positional[0], help=positional[1])
    parser.set_defaults(_shortcuts=tuple(shortcuts))
    return parser


def shortcut_overrides(args: argparse.Namespace) -> list[str]:
    """The `key=value` overrides that the shortcut flags given on the command line stand for."""
    overrides: list[str] = []
    for shortcut in args._shortcuts:
        value = getattr(args, shortcut.flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if not shortcut.is_switch and not str(value).strip(" ,"):
            raise ConfigError(f"{shortcut.flag} was given an empty value: {shortcut.help}")
        overrides.append(f"{shortcut.key}={shortcut.switch_value if shortcut.is_switch else value}")
    return overrides


def config_from_args(args: argparse.Namespace) -> FadeConfig:
    """Defaults, then `--config`, then shortcut flags, then positional overrides (last wins)."""
    return load_config(args.config, [*shortcut_overrides(args), *args.overrides])
