"""The adapters a server may apply: run directories found under `serve.registry`, by id.

Why ids and not paths: a client that could name a path could load any file on the server, or
an adapter made for another model. Only run directories that jobs/erase.py wrote, for the model
being served, are registered; an adapter's id is its run directory's name.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fade.errors import FadeError
from fade.eval.rundirs import WEIGHT_NAME  # not fade.adapters: input checks skip torch
from fade.rundir import ADAPTER, MANIFEST, METRICS

log = logging.getLogger(__name__)

#: What an adapter id may look like (a run directory name, nothing path-like).
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The id of "no request adapter" (only the policy applies).
NO_ADAPTER = "none"
#: Headline metrics a client sees for each adapter.
_HEADLINE = ("H", "H_o", "H_c", "H_a")


class RegistryError(FadeError):
    """The registry or the policy cannot be served as configured."""


@dataclass(frozen=True)
class AdapterEntry:
    """One servable adapter: its id, where it lies and what it erases."""

    id: str
    path: Path
    model: str
    concepts: list[str]
    surrogates: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_dir(self) -> Path:
        return self.path / ADAPTER

    def public(self) -> dict[str, Any]:
        """What `GET /v1/adapters` shows: never the server's paths."""
        return {
            "id": self.id,
            "concepts": self.concepts,
            "surrogates": self.surrogates,
            "metrics": self.metrics,
        }


def _is_run_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file() and (path / ADAPTER / WEIGHT_NAME).is_file()


def _headline_metrics(run_dir: Path) -> dict[str, Any]:
    """Acc before/after per prompt set, the fidelity and alignment figures and the H scores."""
    path = run_dir / METRICS
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    out: dict[str, Any] = {k: data[k] for k in _HEADLINE if isinstance(data.get(k), int | float)}
    for group, numbers in (data.get("acc") or {}).items():
        if numbers:
            out[f"acc_{group}"] = {"before": numbers.get("before"), "after": numbers.get("after")}
    for name in ("fidelity", "alignment"):
        numbers = data.get(name) or {}
        if numbers.get("metric"):
            out[name] = {k: numbers.get(k) for k in ("metric", "before", "after")}
    return out


def read_entry(run_dir: Path) -> AdapterEntry:
    manifest = json.loads((run_dir / MANIFEST).read_text())
    concepts = manifest.get("concepts") or []
    return AdapterEntry(
        id=run_dir.name,
        path=run_dir.resolve(),
        model=str((manifest.get("model") or {}).get("path", "")),
        concepts=[c["name"] for c in concepts],
        surrogates={c["name"]: c["surrogate"] for c in concepts if c.get("surrogate")},
        metrics=_headline_metrics(run_dir),
    )


def scan(locations: list[str], model: str) -> dict[str, AdapterEntry]:
    """Every run directory for `model` at or directly under each location, by id.

    Run directories of another base model are left out (with a log line): their LoRA would load
    onto the wrong weights. Two run directories with one name are a configuration mistake.
    """
    found: dict[str, AdapterEntry] = {}
    for location in locations:
        root = Path(location).expanduser()
        if not root.is_dir():
            log.warning("serve.registry: %s is not a folder; skipped", root)
            continue
        candidates = [root] if _is_run_dir(root) else sorted(p for p in root.iterdir())
        for run_dir in candidates:
            if not (run_dir.is_dir() and _is_run_dir(run_dir)):
                continue
            if not ID_PATTERN.match(run_dir.name) or run_dir.name == NO_ADAPTER:
                log.warning("run directory %s: its name cannot be an adapter id", run_dir)
                continue
            entry = read_entry(run_dir)
            if entry.model != model:
                log.warning(
                    "%s erases from %r, not the served %r; skipped", run_dir, entry.model, model
                )
                continue
            if entry.id in found and found[entry.id].path != entry.path:
                raise RegistryError(
                    f"two run directories are both named {entry.id!r}: "
                    f"{found[entry.id].path} and {entry.path}; rename one"
                )
            found[entry.id] = entry
    return found


def check_policy_ids(policy: list[str], registered: set[str]) -> None:
    """Raise naming the policy's ids that are not registered."""
    missing = [name for name in policy if name not in registered]
    if missing:
        known = ", ".join(sorted(registered)) or "none"
        raise RegistryError(
            f"serve.policy names {', '.join(missing)}, not in the registry (registered: {known})"
        )


def check_policy(policy: list[str], entries: dict[str, AdapterEntry]) -> list[AdapterEntry]:
    """The policy's adapters, or an error naming the ids the registry lacks."""
    check_policy_ids(policy, set(entries))
    return [entries[name] for name in policy]
