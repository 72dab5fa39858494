"""Event streams end to end, through a real daemon on loopback; prints one JSON object.

- transport: DVS events client -> daemon -> client through ``/stream`` (forward mode) with a
  deployment that only passes events through (the DVS layer monitored), against a bare
  FastAPI WebSocket echo of the same frames (same server, same settings) in the same run;
- the guide's network on the virtual devkit, input spikes/s end to end;
- latency p50/p99 of a small forward batch (10 spikes);
- 4 streams on 4 devices at once: aggregate events/s.
Goals: transport >= 10 M events/s and >= 50 % of the echo; p99 <= 10 ms.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from torch import nn
from websockets.sync.client import connect

from specklab.schemas.events import EventKind, dvs_events, spikes
from specklab.schemas.frames import EventsFrame, encode
from specklab.schemas.stream import BatchEnd, ClientStream, Outputs, StreamError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import free_port, run_daemon
from tests.fixtures_models import guide_network, torchscript_bytes

ADMIN = "spk_bench-admin-token-0123456789"
#: Four devices pass DVS events through; the fifth runs the guide's network.
DEVICES = [f"virtual-speck2fdevkit:{i}" for i in range(5)]
PASSTHROUGH, GUIDE = DEVICES[:4], DEVICES[4]
WS_OPTIONS = {"compression": None, "max_size": 256 * 1024 * 1024, "open_timeout": 60}


#: The pass-through deployment: the DVS layer's output monitored, its route to the core off.
PASSTHROUGH_PATCH = {"dvs": {"destinations": {"0": {"enable": False}}}}


def passthrough_model() -> bytes:
    """DVS in, pooled 2x2 by the DVS layer, then one 1x1 conv (switched off by the patch)."""
    model = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(2, 1, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        model[1].weight.fill_(0.01)
    return torchscript_bytes(model, (2, 128, 128))


def random_dvs(n: int, rng: np.random.Generator) -> np.ndarray:
    return dvs_events(
        t=np.sort(rng.integers(0, 1_000_000, n)),
        x=rng.integers(0, 128, n),
        y=rng.integers(0, 128, n),
        p=rng.integers(0, 2, n),
    )


def forward_rate(
    url: str, headers: dict[str, str], kind: str, events: np.ndarray, rounds: int
) -> tuple[float, int]:
    """Input events/s of forward batches, and the outputs of the last batch."""
    with connect(url, additional_headers=headers, **WS_OPTIONS) as websocket:
        client = ClientStream()
        client.receive_data(websocket.recv())
        best = 0.0
        outputs = 0
        for _ in range(rounds):
            start = time.perf_counter()
            client.send_events(kind, events)
            for message in client.data_to_send():
                websocket.send(message)
            outputs = 0
            while True:
                event = client.receive_data(websocket.recv())
                if isinstance(event, Outputs):
                    outputs += len(event.events)
                elif isinstance(event, BatchEnd):
                    break
                elif isinstance(event, StreamError):
                    raise RuntimeError(event)
            best = max(best, len(events) / (time.perf_counter() - start))
        return best, outputs


def echo_rate(url: str, events: np.ndarray, rounds: int) -> float:
    message = encode(EventsFrame(EventKind.DVS, events))
    with connect(url, **WS_OPTIONS) as websocket:
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            websocket.send(message)
            websocket.recv()
            best = max(best, len(events) / (time.perf_counter() - start))
        return best


def latency_ms(url: str, headers: dict[str, str], trials: int) -> list[float]:
    small = spikes(t=np.arange(10), layer=0, feature=0, x=np.arange(10), y=3)
    with connect(url, additional_headers=headers, **WS_OPTIONS) as websocket:
        client = ClientStream()
        client.receive_data(websocket.recv())
        samples = []
        for trial in range(trials + 20):
            start = time.perf_counter()
            client.send_events("spike", small)
            for message in client.data_to_send():
                websocket.send(message)
            while not isinstance(client.receive_data(websocket.recv()), BatchEnd):
                pass
            if trial >= 20:  # warm-up
                samples.append((time.perf_counter() - start) * 1e3)
        return samples


def main() -> None:
    rng = np.random.default_rng(0)
    result: dict[str, object] = {"benchmark": "stream"}
    with tempfile.TemporaryDirectory() as directory:
        env = {"SPECKLAB_ADMIN_TOKEN": ADMIN, "SPECKLAB_LOG_LEVEL": "warning"}
        with run_daemon(Path(directory), "--virtual", "speck2fdevkit=5", env=env) as daemon:
            headers = {"Authorization": f"Bearer {ADMIN}"}
            http = httpx.Client(base_url=daemon.url, headers=headers, timeout=300)
            ws = daemon.url.replace("http://", "ws://")
            models = {}
            for name, data, options in (
                (
                    "passthrough",
                    passthrough_model(),
                    {"input_shape": [2, 128, 128], "dvs_input": True},
                ),
                ("guide", torchscript_bytes(guide_network()), {"input_shape": [1, 28, 28]}),
            ):
                response = http.post(
                    "/v1/models",
                    files={"file": (name, data)},
                    data={"options": json.dumps(options)},
                )
                response.raise_for_status()
                models[name] = response.json()["id"]
            for device in DEVICES:
                model, monitor = (
                    (models["guide"], [-1]) if device == GUIDE else (models["passthrough"], ["dvs"])
                )
                http.post(
                    "/v1/bookings", json={"device_id": device, "minutes": 60}
                ).raise_for_status()
                http.post(
                    f"/v1/devices/{device}/deployment",
                    json={"model_id": model, "monitor_layers": monitor},
                ).raise_for_status()

            def stream_url(device: str) -> str:
                return f"{ws}/v1/devices/{device}/stream"

            batch = random_dvs(200_000, rng)
            transport, passed = forward_rate(stream_url(PASSTHROUGH[0]), headers, "dvs", batch, 8)

            n = 100_000
            guide_input = spikes(
                t=np.sort(rng.integers(0, 1_000_000, n)),
                layer=0,
                feature=0,
                x=rng.integers(0, 28, n),
                y=rng.integers(0, 28, n),
            )
            guide_rate, guide_out = forward_rate(
                stream_url(GUIDE), headers, "spike", guide_input, 4
            )
            latencies = latency_ms(stream_url(GUIDE), headers, 300)

            rounds = 4
            threads = [
                threading.Thread(
                    target=forward_rate, args=(stream_url(d), headers, "dvs", batch, rounds)
                )
                for d in PASSTHROUGH
            ]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            aggregate = len(PASSTHROUGH) * rounds * len(batch) / (time.perf_counter() - start)

        port = free_port()
        echo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "echo_app:app",
                "--port",
                str(port),
                "--ws",
                "websockets-sansio",
                "--ws-per-message-deflate",
                "false",
                "--ws-max-size",
                str(256 * 1024 * 1024),
                "--log-level",
                "warning",
            ],
            cwd=Path(__file__).parent,
            env={**os.environ},
        )
        try:
            for _ in range(100):
                try:
                    with connect(f"ws://127.0.0.1:{port}/echo"):
                        break
                except OSError:
                    time.sleep(0.1)
            echo_events = echo_rate(f"ws://127.0.0.1:{port}/echo", batch, 8)
        finally:
            echo.terminate()
            echo.wait()

    result["transport"] = {
        "batch_events": len(batch),
        "events_per_s": round(transport),
        "outputs_per_batch": passed,
        "echo_events_per_s": round(echo_events),
        "fraction_of_echo": round(transport / echo_events, 3),
        "goal_events_per_s": 10_000_000,
        "goal_fraction_of_echo": 0.5,
    }
    result["guide_network"] = {
        "input_events_per_s": round(guide_rate),
        "outputs_per_batch": guide_out,
    }
    result["latency_ms"] = {
        "p50": round(statistics.median(latencies), 3),
        "p99": round(float(np.percentile(latencies, 99)), 3),
        "goal_p99": 10.0,
    }
    result["concurrent"] = {"streams": len(PASSTHROUGH), "aggregate_events_per_s": round(aggregate)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
