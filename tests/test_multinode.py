"""An erasure on a two-node Ray cluster, simulated on this machine (ray.cluster_utils.Cluster).

It runs in a subprocess: the cluster needs its own Ray, and the test session's local Ray
(conftest.ray_session) must not be disturbed. The head has no CPUs, each of the two nodes one,
and STRICT_SPREAD gives every worker its own node, so the gradient all-reduce really crosses
raylets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, sys
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from fade.config import load_config
from fade.distributed.trainer import run_erasure

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
for _ in range(2):
    cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
try:
    cfg = load_config(overrides=[
        "concepts.names=velmora", "erase.steps=8", "erase.disc_pretrain_steps=2",
        "erase.batch_size=2", "concepts.prompts_per_concept=8",
        "distributed.num_workers=2", "distributed.placement_strategy=STRICT_SPREAD",
        "distributed.checkpoint_every=4", f"distributed.storage_path={sys.argv[1]}",
        "distributed.run_name=two-nodes",
    ])
    outcome = run_erasure(cfg, storage=Path(sys.argv[1]))
    adapter = outcome.checkpoint_dir / "adapter" / "pytorch_lora_weights.safetensors"
    print("RESULT " + json.dumps({
        "metrics": outcome.metrics,
        "adapter_bytes": adapter.stat().st_size,
        "nodes_alive": sum(node["Alive"] for node in ray.nodes()),
    }))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_an_erasure_runs_with_one_worker_on_each_of_two_nodes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "storage")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(lines[-1].removeprefix("RESULT "))
    assert report["nodes_alive"] == 3  # the head and two worker nodes
    metrics = report["metrics"]
    assert metrics["workers"] == 2 and metrics["nodes"] == 2, metrics
    assert metrics["steps_run"] == 8 and report["adapter_bytes"] > 1000
    assert list((tmp_path / "storage" / "two-nodes").glob("checkpoint_*/progress.json"))
