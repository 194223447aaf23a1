"""`ray start --head`, then `ray job submit -- python jobs/erase.py`, as the README shows.

The head gets its own temp dir and free ports (other Rays share this machine, and two heads on
default ports collide), keeps Ray 2.60's token authentication on, and is stopped afterwards by
killing exactly its own processes: never `ray stop`, which stops every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.ports import free_ports

REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
PORT_OPTIONS = (
    "--port",
    "--dashboard-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--node-manager-port",
    "--object-manager-port",
    "--ray-client-server-port",
)


def _stop_own_head(temp_dir: str) -> None:
    """Terminate the processes whose command line names this head's temp dir, and their
    children (the dashboard's and the agents' subprocesses)."""
    import psutil

    own = [
        p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])
    ]
    family = set(own)
    for process in own:
        try:
            family.update(process.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    for process in family:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(list(family), timeout=10)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue


@pytest.fixture(scope="module")
def ray_head():
    # Short: Ray's socket paths live under it and must stay under 108 characters.
    temp_dir = tempfile.mkdtemp(prefix="fade-head-", dir="/tmp")
    ports = dict(zip(PORT_OPTIONS, free_ports(len(PORT_OPTIONS)), strict=True))
    command = [RAY, "start", "--head", f"--temp-dir={temp_dir}", "--num-cpus=3"]
    command += [f"{option}={port}" for option, port in ports.items()]
    command += ["--dashboard-host=127.0.0.1", "--include-dashboard=true", "--disable-usage-stats"]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
        yield f"http://127.0.0.1:{ports['--dashboard-port']}"
    finally:
        _stop_own_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_an_erasure_on_a_running_head(ray_head, tmp_path) -> None:
    out = tmp_path / "submitted"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    erase = [
        sys.executable,
        "jobs/erase.py",
        "--concepts",
        "velmora",
        "--out",
        str(out),
        "--no-eval",
        "erase.steps=8",
        "erase.disc_pretrain_steps=2",
        "erase.batch_size=2",
        "concepts.prompts_per_concept=8",
    ]
    submit = [RAY, "job", "submit", "--address", ray_head, "--working-dir", ".", "--", *erase]
    # The head's agent may need a few seconds after `ray start` before it takes jobs.
    for _attempt in range(10):
        done = subprocess.run(
            submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        if "No available agent" not in done.stdout + done.stderr:
            break
        time.sleep(3)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "succeeded" in log, log[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["workers"] == 2
    assert (out / "adapter" / "pytorch_lora_weights.safetensors").is_file()
