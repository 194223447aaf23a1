"""A bounded HTTP load generator for the service: N requests at a fixed concurrency.

Why not a load-testing tool: the figures the serving issue asks for (errors, p50/p95 latency,
throughput, the same for alternating adapters and under a replica kill) come from one small
loop over `requests`, with no extra dependency and no daemon.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import requests


@dataclass
class LoadReport:
    """Per-request status codes (-1: no answer) and latencies, and the run's wall time."""

    codes: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def errors(self) -> int:
        return sum(code != 200 for code in self.codes)

    @property
    def throughput(self) -> float:
        """Answered requests per second over the whole run."""
        return (len(self.codes) - self.errors) / self.wall_seconds if self.wall_seconds else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    def summary(self) -> str:
        return (
            f"{len(self.codes)} requests, {self.errors} errors; latency p50 "
            f"{self.percentile(50) * 1000:.0f} ms, p95 {self.percentile(95) * 1000:.0f} ms, "
            f"max {max(self.latencies, default=0) * 1000:.0f} ms; "
            f"{self.throughput:.2f} requests/s in {self.wall_seconds:.1f} s"
        )


def run_load(
    url: str,
    bodies: list[dict],
    concurrency: int = 8,
    timeout_s: float = 120.0,
    headers: dict[str, str] | None = None,
    after_request: Callable[[int], None] | None = None,
) -> LoadReport:
    """POST every body to `url` + /v1/images, `concurrency` at a time; `after_request(i)` runs
    in the client thread after request i is answered (a fault test kills a replica there)."""
    local = threading.local()
    report = LoadReport(codes=[0] * len(bodies), latencies=[0.0] * len(bodies))

    def one(index: int) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        started = time.perf_counter()
        try:
            response = local.session.post(
                f"{url}/v1/images", json=bodies[index], headers=headers or {}, timeout=timeout_s
            )
            report.codes[index] = response.status_code
        except requests.RequestException:
            report.codes[index] = -1
        report.latencies[index] = time.perf_counter() - started
        if after_request is not None:
            after_request(index)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(len(bodies))))
    report.wall_seconds = time.perf_counter() - started
    return report
