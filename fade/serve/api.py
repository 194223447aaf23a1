"""The HTTP contract: request and response bodies (FastAPI's OpenAPI schema) and their limits.

Why its own module: every bound (prompt length, steps, size, count, adapter ids) is checked here,
before a request reaches a model replica, and each violation becomes a 4xx with one clear JSON
message; the checks are plain functions that tests call without a server.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fade.config import ServeConfig
from fade.serve.engine import ImageRequest
from fade.serve.registry import NO_ADAPTER


class ApiError(Exception):
    """A request the server refuses: an HTTP status and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class ImagesBody(BaseModel):
    """`POST /v1/images`. Unknown fields are refused: there is no scale or adapter-off switch
    to find, and a typo should not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="what to draw")
    adapter: str = Field(
        NO_ADAPTER, description="an adapter id from GET /v1/adapters; 'none': the policy only"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="image i uses noise seed seed + i")
    steps: int | None = Field(None, description="denoising steps (null: the server's default)")
    size: int | None = Field(None, description="image side in pixels (null: the model's)")
    count: int = Field(1, description="images to generate")
    format: Literal["json", "png"] = Field(
        "json", description="json: base64 PNGs in a JSON body; png: the image itself (count 1)"
    )


class ImagesResponse(BaseModel):
    images: list[str] = Field(description="base64-encoded PNG images")
    adapter: str
    policy: list[str] = Field(description="adapters every image has, fused into the model")
    seed: int
    steps: int
    size: int


class AdapterInfo(BaseModel):
    id: str
    concepts: list[str]
    surrogates: dict[str, str]
    metrics: dict


class AdaptersResponse(BaseModel):
    adapters: list[AdapterInfo]
    policy: list[AdapterInfo] = Field(description="always applied; cannot be switched off")


class ErrorResponse(BaseModel):
    error: str


@dataclass(frozen=True)
class Limits:
    """The bounds a request is checked against (from `serve.*` and the served model)."""

    max_prompt_chars: int
    default_steps: int
    max_steps: int
    default_size: int
    max_size: int
    size_multiple: int
    max_count: int

    @classmethod
    def from_config(cls, cfg: ServeConfig, model_size: int, size_multiple: int) -> Limits:
        return cls(
            max_prompt_chars=cfg.max_prompt_chars,
            default_steps=min(cfg.default_steps, cfg.max_steps),
            max_steps=cfg.max_steps,
            default_size=cfg.default_size or model_size,
            max_size=cfg.max_size,
            size_multiple=size_multiple,
            max_count=cfg.max_count,
        )


def check_request(body: ImagesBody, limits: Limits, adapters: set[str]) -> ImageRequest:
    """The request the replicas will run, or an ApiError naming the first bound it breaks."""
    prompt = body.prompt.strip()
    if not prompt:
        raise ApiError(422, "prompt is empty")
    if len(prompt) > limits.max_prompt_chars:
        raise ApiError(
            422, f"prompt has {len(prompt)} characters; at most {limits.max_prompt_chars}"
        )
    if body.adapter != NO_ADAPTER and body.adapter not in adapters:
        known = ", ".join(sorted(adapters)) or "none registered"
        raise ApiError(404, f"unknown adapter {body.adapter!r}; known: {known}")
    steps = limits.default_steps if body.steps is None else body.steps
    if not 1 <= steps <= limits.max_steps:
        raise ApiError(422, f"steps = {steps}: must be in [1, {limits.max_steps}]")
    size = limits.default_size if body.size is None else body.size
    if not limits.size_multiple <= size <= limits.max_size or size % limits.size_multiple:
        raise ApiError(
            422,
            f"size = {size}: must be a multiple of {limits.size_multiple} "
            f"in [{limits.size_multiple}, {limits.max_size}]",
        )
    if not 1 <= body.count <= limits.max_count:
        raise ApiError(422, f"count = {body.count}: must be in [1, {limits.max_count}]")
    if body.format == "png" and body.count != 1:
        raise ApiError(422, "format png returns one image: use count 1, or format json")
    return ImageRequest(prompt, body.adapter, body.seed, steps, size, body.count)


def check_token(header: str | None, token: str | None) -> None:
    """Bearer auth when a token is set: 401 without credentials, 403 with wrong ones."""
    if token is None:
        return
    if not header or not header.lower().startswith("bearer "):
        raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        raise ApiError(403, "the bearer token is not valid")
