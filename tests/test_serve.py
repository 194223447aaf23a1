"""Ray Serve through real HTTP on loopback: what the service returns is what the adapter makes,
the policy cannot be bypassed, bad requests get their 4xx, and a killed replica is replaced.

Two applications share one Serve proxy: `open` (no policy, no auth) and `guarded` (the toy
adapter as policy, a bearer token). The adapter is built the way a first `jobs/serve.py` builds
it: the toy default erasure, through Ray Train, into an empty registry.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import time

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from fade.config import load_config
from fade.serve.loadtest import run_load
from fade.serve.runner import TOY_ADAPTER_ID, ensure_toy_adapter, start
from tests import test_report
from tests.ports import free_port

chromium = test_report.browser

TOKEN = "s3cret-token"
TIMEOUT_S = 20.0
# Small evaluation of the built adapter: metrics for GET /v1/adapters in seconds, not minutes.
BUILD = [
    "eval.samples_per_prompt=1",
    "eval.fd_samples=16",
    "eval.images_per_neighbour=4",
]


@pytest.fixture(scope="module")
def registry(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry")
    cfg = load_config(overrides=[*BUILD, f"serve.registry=[{folder}]"])
    built = ensure_toy_adapter(cfg)
    assert built == folder / TOY_ADAPTER_ID
    assert ensure_toy_adapter(cfg) is None  # built once, found after
    return folder


@pytest.fixture(scope="module")
def server(registry):
    from ray import serve

    common = [
        f"serve.registry=[{registry}]",
        f"serve.port={free_port()}",
        f"serve.request_timeout_s={TIMEOUT_S}",
        "serve.max_count=4",
        "serve.max_size=64",
    ]
    open_url = start(load_config(overrides=common), name="open", route_prefix="/open")
    guarded_url = start(
        load_config(
            overrides=[*common, f"serve.policy=[{TOY_ADAPTER_ID}]", f"serve.token={TOKEN}"]
        ),
        name="guarded",
        route_prefix="/guarded",
    )
    yield {"open": open_url, "guarded": guarded_url}
    serve.shutdown()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _post(
    url: str, body: dict, headers: dict | None = None, timeout: float = 60
) -> requests.Response:
    return requests.post(f"{url}/v1/images", json=body, headers=headers or {}, timeout=timeout)


def _images(response: requests.Response) -> list[np.ndarray]:
    assert response.status_code == 200, response.text
    return [
        np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in response.json()["images"]
    ]


def test_a_served_image_is_the_offline_pipeline_with_the_adapter(server, registry) -> None:
    from diffusers import FluxPipeline

    from fade.backbones.loading import resolve_model_path
    from fade.toyworld.spec import MAX_TOKENS

    served = _images(
        _post(
            server["open"],
            {"prompt": "a red diamond", "adapter": TOY_ADAPTER_ID, "seed": 11, "count": 2},
        )
    )
    pipe = FluxPipeline.from_pretrained(resolve_model_path("toy"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(registry / TOY_ADAPTER_ID / "adapter"))
    offline = pipe(
        ["a red diamond"] * 2,
        negative_prompt=[""] * 2,
        true_cfg_scale=3.5,
        height=32,
        width=32,
        max_sequence_length=MAX_TOKENS,
        num_inference_steps=20,
        generator=[torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)],
    ).images
    for ours, theirs in zip(served, offline, strict=True):
        assert np.array_equal(ours, np.asarray(theirs))
    # ... and the adapter is really applied: without it the same seed draws something else.
    base = _images(_post(server["open"], {"prompt": "a red diamond", "seed": 11}))[0]
    assert not np.array_equal(base, served[0])


def _diamond_rate(url: str, headers: dict, adapter: str = "none") -> tuple[float, int]:
    """The toy detector's confident-diamond rate over 64 images of prompts naming diamonds."""
    from fade.eval.erasure import detection_rate
    from fade.toyworld.detector import ToyDetector, images_to_unit

    prompts = ["a diamond", "a red rhombus", "a blue diamond", "a diamond by velmora"]
    images = []
    for index in range(16):
        body = {
            "prompt": prompts[index % 4],
            "adapter": adapter,
            "seed": 100 + 4 * index,
            "count": 4,
        }
        images += _images(_post(url, body, headers))
    pixels = images_to_unit(np.stack(images))
    rate = detection_rate(ToyDetector.load(), pixels, ["diamond"] * len(images), 0.9)
    return rate, len(images)


def test_the_policy_cannot_be_bypassed(server) -> None:
    rate, count = _diamond_rate(server["guarded"], AUTH)
    assert count == 64
    assert rate <= 5.0, rate
    # The same prompts and seeds without the policy draw diamonds: the check above can fail.
    open_rate, _ = _diamond_rate(server["open"], {})
    assert open_rate >= 40.0, open_rate
    # No request can name the policy adapter, a path, or a strength to undo it.
    for body, status in [
        ({"prompt": "a diamond", "adapter": TOY_ADAPTER_ID}, 404),
        ({"prompt": "a diamond", "adapter": f"../{TOY_ADAPTER_ID}"}, 404),
        ({"prompt": "a diamond", "scale": -1.0}, 422),
        ({"prompt": "a diamond", "lora_scale": 0.0}, 422),
    ]:
        response = _post(server["guarded"], body, AUTH)
        assert response.status_code == status, (body, response.text)
    listed = requests.get(f"{server['guarded']}/v1/adapters", headers=AUTH, timeout=30).json()
    assert [a["id"] for a in listed["policy"]] == [TOY_ADAPTER_ID]
    assert TOY_ADAPTER_ID not in [a["id"] for a in listed["adapters"]]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": ""}, 422, "prompt is empty"),
        ({"prompt": "x" * 301}, 422, "at most 300"),
        ({"prompt": "a circle", "adapter": "nope"}, 404, "unknown adapter"),
        ({"prompt": "a circle", "adapter": "/etc/passwd"}, 404, "unknown adapter"),
        ({"prompt": "a circle", "steps": 0}, 422, "steps = 0"),
        ({"prompt": "a circle", "steps": 51}, 422, "steps = 51"),
        ({"prompt": "a circle", "steps": "many"}, 422, "steps"),
        ({"prompt": "a circle", "size": 33}, 422, "multiple of 4"),
        ({"prompt": "a circle", "size": 128}, 422, "size = 128"),
        ({"prompt": "a circle", "count": 0}, 422, "count = 0"),
        ({"prompt": "a circle", "count": 5}, 422, "count = 5"),
        ({"prompt": "a circle", "count": 2, "format": "png"}, 422, "format png"),
        ({"prompt": "a circle", "seed": -1}, 422, "seed"),
        ({"adapter": "none"}, 422, "prompt"),
    ],
)
def test_bad_requests_get_their_4xx_and_the_server_keeps_serving(
    server, body, status, message
) -> None:
    response = _post(server["open"], body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"], response.json()
    assert _post(server["open"], {"prompt": "a circle", "steps": 2}).status_code == 200


def test_malformed_json_and_auth(server) -> None:
    url = server["guarded"]
    broken = requests.post(
        f"{url}/v1/images",
        data="{not json",
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    assert broken.status_code == 422 and "error" in broken.json()
    assert _post(url, {"prompt": "a circle"}).status_code == 401
    assert _post(url, {"prompt": "a circle"}, {"Authorization": "Bearer wrong"}).status_code == 403
    assert requests.get(f"{url}/v1/adapters", timeout=30).status_code == 401
    png = _post(url, {"prompt": "a circle", "format": "png", "steps": 4}, AUTH)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (32, 32)


def test_adapters_health_and_schema(server) -> None:
    url = server["open"]
    assert requests.get(f"{url}/healthz", timeout=30).json() == {"status": "ok", "policy": []}
    (entry,) = requests.get(f"{url}/v1/adapters", timeout=30).json()["adapters"]
    assert entry["id"] == TOY_ADAPTER_ID and entry["concepts"] == ["diamond"]
    assert entry["metrics"]["acc_target"]["after"] < entry["metrics"]["acc_target"]["before"]
    assert "path" not in entry  # clients never see the server's folders
    schema = requests.get(f"{url}/openapi.json", timeout=30).json()
    assert {"/v1/images", "/v1/adapters", "/healthz"} <= set(schema["paths"])
    size = _images(_post(url, {"prompt": "a blue circle", "size": 48, "steps": 4}))[0].shape
    assert size == (48, 48, 3)


def test_a_bounded_load_completes_without_errors(server) -> None:
    """40 requests at concurrency 8, alternating two adapters (jobs/benchmark.py serve runs
    the full 300 and measures throughput)."""
    adapters = ["none", TOY_ADAPTER_ID]
    bodies = [
        {"prompt": "a green square", "adapter": adapters[i % 2], "seed": i, "steps": 8}
        for i in range(40)
    ]
    report = run_load(server["open"], bodies, concurrency=8, timeout_s=60)
    assert report.codes == [200] * 40


def _replica_pid(app: str) -> int:
    from ray import serve

    handle = serve.get_deployment_handle("ImageGenerator", app_name=app)
    return handle.describe.remote().result(timeout_s=30)["pid"]


def test_a_killed_replica_is_replaced_and_no_request_hangs(server) -> None:
    """SIGKILL the model replica under load: every request ends within its timeout (answered
    or refused, never hanging), Serve starts a new replica, and serving recovers."""
    url = server["open"]
    victim = _replica_pid("open")
    bodies = [{"prompt": "a red circle", "seed": i, "steps": 8} for i in range(40)]

    def kill_after_the_fifth(index: int) -> None:
        if index == 4:
            os.kill(victim, signal.SIGKILL)

    report = run_load(url, bodies, 4, timeout_s=TIMEOUT_S + 15, after_request=kill_after_the_fifth)
    print(f"replica killed under load: {report.errors} of {len(report.codes)} requests failed")
    assert all(code in (200, 503, 504) for code in report.codes), report.codes
    assert max(report.latencies) <= TIMEOUT_S + 10, report.latencies
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if _post(url, {"prompt": "a red circle", "steps": 4}).status_code == 200:
            break
        time.sleep(1)
    else:
        pytest.fail("serving did not recover within 60 s")
    assert _replica_pid("open") != victim


def test_the_page_generates_an_image_in_chromium(server, chromium, tmp_path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    chromium.get(f"{server['open']}/")
    WebDriverWait(chromium, 30).until(
        lambda d: len(Select(d.find_element(By.ID, "adapter")).options) == 2
    )
    Select(chromium.find_element(By.ID, "adapter")).select_by_value(TOY_ADAPTER_ID)
    prompt = chromium.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("a yellow dotted circle")
    chromium.find_element(By.ID, "go").click()
    WebDriverWait(chromium, 60).until(
        lambda d: d.execute_script(
            "const i = document.querySelector('#images img');"
            "return i !== null && i.complete && i.naturalWidth === 32"
        )
    )
    assert "adapter toy-diamond" in chromium.find_element(By.ID, "status").text
    shot = np.asarray(test_report.screenshot(chromium, tmp_path / "page.png"))
    assert shot.std() > 10
