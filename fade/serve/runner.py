"""Start the service, keep it up in the foreground, take it down cleanly on Ctrl-C or SIGTERM.

Ray is started here only when no cluster is given (as jobs/erase.py does), and only what this
process started is stopped: Serve's application and proxy, then the local Ray.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import socket
import threading
from pathlib import Path

from fade.config import FadeConfig, OutputConfig
from fade.errors import FadeError
from fade.serve.registry import check_policy_ids, scan

TOKEN_ENV = "FADE_SERVE_TOKEN"
#: The adapter a no-argument toy server builds when its registry has none.
TOY_ADAPTER_ID = "toy-diamond"


def resolve_token(cfg: FadeConfig) -> FadeConfig:
    """`serve.token`, else the FADE_SERVE_TOKEN environment variable, else no auth."""
    token = cfg.serve.token or os.environ.get(TOKEN_ENV) or None
    return dataclasses.replace(cfg, serve=dataclasses.replace(cfg.serve, token=token))


def check_port_free(host: str, port: int) -> None:
    """Fail with a clear message before Serve does with a buried one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise FadeError(
                f"cannot listen on {host}:{port} ({error.strerror}): pass another --port"
            ) from None


def ensure_toy_adapter(cfg: FadeConfig) -> Path | None:
    """On the toy model with an empty registry, erase the default concept into the first
    registry folder, so a first `jobs/serve.py` has an adapter to show (about 4 minutes)."""
    if cfg.model.path != "toy" or scan(cfg.serve.registry, cfg.model.path):
        return None
    from fade.run import erase

    target = Path(cfg.serve.registry[0]) / TOY_ADAPTER_ID
    print(f"no adapter registered yet: building {target} (the toy default erasure, ~4 min)")
    erase(dataclasses.replace(cfg, output=OutputConfig(dir=str(target), overwrite=False)))
    return target


def preflight(cfg: FadeConfig) -> None:
    """Mistakes a replica would only report as a failed deployment, as one line, before Ray
    starts: a policy naming unregistered adapters (except the toy adapter a first start
    builds) or two run directories of one name, a model that is not there. The registry goes
    first: its checks read only its files, while the model's imports torch and diffusers."""
    registered = set(scan(cfg.serve.registry, cfg.model.path))  # also refuses duplicate names
    if cfg.model.path == "toy" and not registered:
        registered = {TOY_ADAPTER_ID}  # ensure_toy_adapter builds it before deploying
    check_policy_ids(cfg.serve.policy, registered)
    from fade.backbones.loading import detect_family, resolve_model_path

    detect_family(
        resolve_model_path(cfg.model.path), cfg.model.revision, cfg.model.local_files_only
    )


def start(cfg: FadeConfig, name: str | None = None, route_prefix: str = "/") -> str:
    """Deploy the application on the connected Ray and return its base URL (several
    applications, say with and without a policy, can share the proxy on their own prefixes)."""
    from ray import serve

    from fade.serve.app import APP_NAME, build_app

    preflight(cfg)
    serve.start(
        http_options={
            "host": cfg.serve.host,
            "port": cfg.serve.port,
            # A backstop behind the gateway's own timeout, which answers 504 first.
            "request_timeout_s": cfg.serve.request_timeout_s + 10,
        }
    )
    serve.run(build_app(cfg), name=name or APP_NAME, route_prefix=route_prefix)
    return f"http://{cfg.serve.host}:{cfg.serve.port}{route_prefix.rstrip('/')}"


def stop(shutdown_serve: bool = True) -> None:
    """Delete the application; stop Serve too unless it runs on a cluster others share."""
    from ray import serve

    from fade.serve.app import APP_NAME

    serve.delete(APP_NAME)
    if shutdown_serve:
        serve.shutdown()


def serve_forever(cfg: FadeConfig) -> None:
    """Run until SIGINT or SIGTERM, then take the service and a Ray started here down."""
    cfg = resolve_token(cfg)
    check_port_free(cfg.serve.host, cfg.serve.port)
    preflight(cfg)
    import ray  # after the checks: a mistake is answered before Ray loads

    from fade.distributed.trainer import start_ray

    started_ray = start_ray(cfg, extra_cpus=cfg.serve.replicas * cfg.serve.replica_cpus)
    previous = {}
    try:
        ensure_toy_adapter(cfg)
        # Installed after ray.init, which sets its own SIGTERM handler (it exits at once).
        stopping = threading.Event()
        previous = {
            signum: signal.signal(signum, lambda *_: stopping.set())
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        url = start(cfg)
        auth = "bearer token required" if cfg.serve.token else "no auth"
        print(f"serving on {url} ({auth}; API docs at {url}/docs); Ctrl-C stops", flush=True)
        while not stopping.wait(0.5):
            pass
        print("stopping...", flush=True)
        stop(shutdown_serve=started_ray)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if started_ray:
            ray.shutdown()
    print("stopped", flush=True)


def application(args: dict):
    """Application builder for `serve run fade.serve.runner:application` and KubeRay's
    RayService (cluster/kuberay/rayservice.yaml): `args` are {config: FILE, overrides: [...]},
    the same settings `jobs/serve.py` takes; the HTTP host and port are the cluster's."""
    from fade.config import load_config
    from fade.serve.app import build_app

    unknown = set(args) - {"config", "overrides"}
    if unknown:
        raise FadeError(f"unknown application arguments {sorted(unknown)}: use config, overrides")
    overrides = args.get("overrides") or []
    if isinstance(overrides, str):  # `serve run ... overrides="a=1 b=[x,y]"` passes text
        overrides = shlex.split(overrides)
    if not isinstance(overrides, list):
        raise FadeError(f"overrides must be a list of key=value settings, got {overrides!r}")
    cfg = resolve_token(load_config(args.get("config"), [str(o) for o in overrides]))
    preflight(cfg)
    return build_app(cfg)
