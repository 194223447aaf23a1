"""Free TCP ports for servers and process groups a test starts (other sessions share the
machine, so fixed ports collide)."""

from __future__ import annotations

import socket


def free_ports(count: int = 1) -> list[int]:
    """`count` distinct ports free right now (all probed at once, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def free_port() -> int:
    return free_ports(1)[0]
