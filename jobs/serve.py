"""Serve a text-to-image model with erasure adapters over HTTP (Ray Serve).

    python jobs/serve.py                                   # the toy model and a toy adapter
    python jobs/serve.py --port 8080 serve.policy=[toy-diamond]
    FADE_SERVE_TOKEN=secret python jobs/serve.py --host 0.0.0.0

Thin entry point: parse the config, hand it to fade.serve.runner (docs/serving.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fade.cli import MODEL_SHORTCUT, Shortcut, build_parser, config_from_args
from fade.errors import run_cli

SHORTCUTS = (
    MODEL_SHORTCUT,
    Shortcut("--host", "serve.host", "address to listen on"),
    Shortcut("--port", "serve.port", "port to listen on"),
    Shortcut(
        "--registry",
        "serve.registry",
        "run directories, or folders of them, whose adapters may be requested (comma-separated)",
    ),
    Shortcut(
        "--policy",
        "serve.policy",
        "adapter ids fused into every replica: no request can switch them off",
    ),
    Shortcut("--replicas", "serve.replicas", "model replicas"),
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(
        "jobs/serve.py",
        "Serve a text-to-image model over HTTP with Ray Serve: POST /v1/images, "
        "GET /v1/adapters, GET /healthz, a page at /, the OpenAPI schema at /docs. "
        "Runs in the foreground until Ctrl-C or SIGTERM. With no registered adapter on the "
        "toy model, it first erases the toy default concept into runs/toy-diamond.",
        SHORTCUTS,
    )
    cfg = config_from_args(parser.parse_args(argv))
    from fade.serve.runner import serve_forever

    serve_forever(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
