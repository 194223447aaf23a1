"""The Ray Serve application: an HTTP gateway in front of model replicas.

Two deployments, so that each does one thing:

- `Gateway` (FastAPI ingress, no CPU reserved): auth, validation, the web page, the per-request
  timeout; it never touches a model, so a bad request costs no replica time.
- `ImageGenerator` (`serve.replicas` replicas): the base pipeline loaded once with the policy
  fused in; request adapters multiplexed per request (`serve.multiplexed`, least recently used
  evicted), so Serve routes an adapter's requests to the replicas that already hold it; requests
  arriving together batched (`serve.batch`) and run one denoiser call per adapter.
"""

import asyncio
import base64
import logging
from collections import defaultdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from fade.backbones.loading import TOY_MODEL_ID
from fade.config import FadeConfig
from fade.serve.api import (
    AdaptersResponse,
    ApiError,
    ErrorResponse,
    ImagesBody,
    ImagesResponse,
    Limits,
    check_request,
    check_token,
)
from fade.serve.engine import ImageEngine, ImageRequest
from fade.serve.page import PAGE
from fade.serve.registry import NO_ADAPTER, check_policy, scan
from fade.toyworld.spec import IMAGE_SIZE

log = logging.getLogger(__name__)

APP_NAME = "fade"

api = FastAPI(
    title="FADE on Ray",
    version="1",
    description="Images from a text-to-image model with concept-erasure adapters; the "
    "policy adapters are fused into the model and cannot be switched off.",
)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@api.exception_handler(ApiError)
async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
    return _error(error.status, error.message)


@api.exception_handler(RequestValidationError)
async def _invalid_body(_request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return _error(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}")


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 503, 504)
}


async def _result(response: Any) -> Any:
    """A DeploymentResponse as a coroutine, for asyncio.wait_for. (Defined above the
    deployments: Serve pickles a deployment's class when it is decorated.)"""
    return await response


class Coalescer:
    """Joins the calls that reach it together into one call of `run`, in a worker thread.

    Why: Serve hands a batch's per-adapter parts to the batch handler concurrently; run one
    after another they finish one after another, clients return staggered, and batches
    shrink to one request (measured: 1.8 instead of 5 requests/s with 3 adapters in turn).
    """

    def __init__(self, run):
        self.run = run
        self.pending: list[tuple[list, asyncio.Future]] = []
        self.draining: asyncio.Task | None = None

    async def submit(self, items: list) -> list:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((items, future))
        if self.draining is None or self.draining.done():
            self.draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # the other parts of the same batch arrive in this turn
        while self.pending:
            taken, self.pending = self.pending, []
            flat = [item for items, _ in taken for item in items]
            try:
                results = await asyncio.to_thread(self.run, flat)
            except Exception as error:  # each caller gets the failure as its own
                for _, future in taken:
                    future.set_exception(error)
                continue
            start = 0
            for items, future in taken:
                future.set_result(results[start : start + len(items)])
                start += len(items)


class _AdapterLease:
    """What the multiplexer caches per adapter; Serve calls __del__ when it evicts one."""

    def __init__(self, engine: ImageEngine, adapter_id: str):
        self.engine, self.adapter_id, self.released = engine, adapter_id, False

    def __del__(self) -> None:
        if not self.released:
            self.released = True
            self.engine.release(self.adapter_id)


class _GeneratorBase:
    """One model replica (see the module docstring); the multiplexed loader is added per
    config by `generator_deployment`, since its cache size is fixed when it is decorated."""

    def __init__(self, cfg: FadeConfig):
        import torch

        from fade.backbones import load_backbone

        torch.set_num_threads(max(1, round(cfg.serve.replica_cpus)))
        backbone = load_backbone(
            cfg.model.path,
            cfg.model.family,
            cfg.model.revision,
            cfg.model.dtype,
            cfg.model.device,
            cfg.model.local_files_only,
        )
        entries = scan(cfg.serve.registry, cfg.model.path)
        policy = check_policy(cfg.serve.policy, entries)
        self.engine = ImageEngine(backbone, entries, policy, cfg.serve.guidance_scale)
        # diffusers' FluxPipeline assumes 1024-pixel images; the toy world draws 32x32.
        self.model_size = IMAGE_SIZE if cfg.model.path == TOY_MODEL_ID else backbone.default_size
        self.coalescer = Coalescer(self._run)
        self.generate_batch.set_max_batch_size(cfg.serve.max_batch_size)
        self.generate_batch.set_batch_wait_timeout_s(cfg.serve.batch_wait_s)

    def describe(self) -> dict[str, Any]:
        """What the gateway needs to validate requests and list adapters."""
        import os

        engine = self.engine
        return {
            "pid": os.getpid(),
            "default_size": self.model_size,
            "size_multiple": engine.size_multiple,
            "adapters": [e.public() for i, e in engine.entries.items() if i not in engine.policy],
            "policy": [engine.entries[i].public() for i in engine.policy],
        }

    async def generate(self, request: ImageRequest) -> list[bytes]:
        adapter_id = serve.get_multiplexed_model_id() or NO_ADAPTER
        if adapter_id != request.adapter:
            raise ValueError(f"routed as {adapter_id!r} but asks for {request.adapter!r}")
        await self.adapter(adapter_id)
        return await self.generate_batch(request)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def generate_batch(self, requests: list[ImageRequest]) -> list[list[bytes]]:
        """One adapter's share of a batch: Serve splits a batch by multiplexed id and runs the
        parts together; the coalescer joins them again into one denoiser call."""
        return await self.coalescer.submit(requests)

    def _run(self, requests: list[ImageRequest]) -> list[list[bytes]]:
        """One denoiser call per step count and size, each image through its own adapter."""
        groups: dict[tuple, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            groups[request.batch_key()].append(index)
        results: list[list[bytes]] = [[] for _ in requests]
        for indices in groups.values():
            images = self.engine.generate([requests[i] for i in indices])
            for index, pngs in zip(indices, images, strict=True):
                results[index] = pngs
        return results

    async def _lease(self, adapter_id: str) -> _AdapterLease:
        await asyncio.to_thread(self.engine.load, adapter_id)
        return _AdapterLease(self.engine, adapter_id)


def generator_deployment(cfg: FadeConfig):
    """The model-replica deployment, its adapter cache sized by `serve.adapters_per_replica`."""

    class ImageGenerator(_GeneratorBase):
        @serve.multiplexed(max_num_models_per_replica=cfg.serve.adapters_per_replica)
        async def adapter(self, adapter_id: str) -> _AdapterLease:
            return await self._lease(adapter_id)

    return serve.deployment(
        ImageGenerator,
        name="ImageGenerator",
        num_replicas=cfg.serve.replicas,
        ray_actor_options={"num_cpus": cfg.serve.replica_cpus, "num_gpus": cfg.serve.replica_gpus},
        max_ongoing_requests=max(2 * cfg.serve.max_batch_size, 4),
        health_check_period_s=2,
        health_check_timeout_s=30,
        graceful_shutdown_timeout_s=5,
    )


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
@serve.ingress(api)
class Gateway:
    """Auth, validation, the page and the timeout; generation is the replicas' job."""

    def __init__(self, generator: DeploymentHandle, cfg: FadeConfig):
        self.generator = generator
        self.serve_cfg = cfg.serve
        self._described: dict[str, Any] | None = None

    async def _description(self) -> dict[str, Any]:
        if self._described is None:
            self._described = await self.generator.describe.remote()
        return self._described

    async def _limits(self) -> tuple[Limits, set[str]]:
        described = await self._description()
        limits = Limits.from_config(
            self.serve_cfg, described["default_size"], described["size_multiple"]
        )
        return limits, {entry["id"] for entry in described["adapters"]}

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        return HTMLResponse(PAGE)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        described = await self._description()
        return {"status": "ok", "policy": [entry["id"] for entry in described["policy"]]}

    @api.get("/v1/adapters", response_model=AdaptersResponse, responses=_ERRORS)
    async def adapters(self, request: Request) -> dict[str, Any]:
        check_token(request.headers.get("authorization"), self.serve_cfg.token)
        described = await self._description()
        return {"adapters": described["adapters"], "policy": described["policy"]}

    @api.post(
        "/v1/images",
        response_model=ImagesResponse,
        responses={**_ERRORS, 200: {"content": {"image/png": {}}}},
    )
    async def images(self, body: ImagesBody, request: Request) -> Any:
        check_token(request.headers.get("authorization"), self.serve_cfg.token)
        limits, known = await self._limits()
        checked = check_request(body, limits, known)
        pngs = await self._generate(checked)
        if body.format == "png":
            return Response(pngs[0], media_type="image/png")
        described = await self._description()
        return {
            "images": [base64.b64encode(png).decode("ascii") for png in pngs],
            "adapter": checked.adapter,
            "policy": [entry["id"] for entry in described["policy"]],
            "seed": checked.seed,
            "steps": checked.steps,
            "size": checked.size,
        }

    async def _generate(self, request: ImageRequest) -> list[bytes]:
        """Run on a replica within the timeout; one retry when a replica dies under it
        (generation is deterministic, so a retry returns what the first try would have)."""
        import ray.exceptions

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.serve_cfg.request_timeout_s
        handle = self.generator.options(multiplexed_model_id=request.adapter)
        for attempt in (1, 2):
            response = handle.generate.remote(request)
            try:
                return await asyncio.wait_for(_result(response), deadline - loop.time())
            except TimeoutError:
                response.cancel()
                raise ApiError(
                    504, f"no answer within {self.serve_cfg.request_timeout_s:g} s"
                ) from None
            except ray.exceptions.RayTaskError as error:
                log.exception("generation failed")
                raise ApiError(500, f"generation failed: {type(error.cause).__name__}") from None
            except ray.exceptions.RayError as error:
                log.warning("replica unavailable (attempt %d): %s", attempt, error)
                if attempt == 2 or loop.time() >= deadline:
                    raise ApiError(503, "no model replica is available; retry shortly") from None
        raise AssertionError("unreachable")


def build_app(cfg: FadeConfig):
    """The bound application `serve.run` deploys."""
    generator = generator_deployment(cfg).bind(cfg)
    return Gateway.bind(generator, cfg)
