"""Shared fixtures: tiny pipelines and backbones, built once per test session."""

from __future__ import annotations

import os

# Tests never touch a model hub: every model is built from a config in code.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from fade.backbones import Backbone, wrap_pipeline
from tests.tiny import tiny_flux_pipeline, tiny_sd_pipeline


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that needs one (erasure jobs, Serve): start-ups are slow.
    3 CPUs: two training workers and a driver, or a model replica per served application."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def flux_pipeline():
    pipeline = tiny_flux_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def sd_pipeline():
    pipeline = tiny_sd_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="session")
def flux_backbone(flux_pipeline) -> Backbone:
    return wrap_pipeline(flux_pipeline, model_id="tiny-flux")


@pytest.fixture(scope="session")
def sd_backbone(sd_pipeline) -> Backbone:
    return wrap_pipeline(sd_pipeline, model_id="tiny-sd")


@pytest.fixture(scope="session", params=["flux", "sd"])
def backbone(request, flux_backbone, sd_backbone) -> Backbone:
    return {"flux": flux_backbone, "sd": sd_backbone}[request.param]
