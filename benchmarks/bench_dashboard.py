"""The dashboard's live view at a high sensor rate, through a real daemon on loopback and a
real browser; prints one JSON object.

A virtual devkit whose sensor sends ``BENCH_DASH_RATE`` events/s (default 2 M) is booked by one
user, who watches it for ``BENCH_DASH_SECONDS``:

- ``browser``: headless Chromium (the system's, driven by Playwright, as ``tests/browser``
  does) signs in and opens the device page's sensor view (``#/device/ID/sensor``): frames/s
  the page received *and drew* (its ``#live-frames`` counter, read from the page), the sensor
  events/s those frames counted, the server's frames/s over the same window (the frames'
  ``seq``), and the daemon's CPU (seconds of CPU per second, from /proc);
- ``server_frames`` (baseline: what the daemon produces without a browser):
  ``WS /v1/devices/{id}/live?sensor=true`` read by a plain WebSocket client;
- ``baseline_raw_dvs``: the same sensor on ``WS /v1/devices/{id}/dvs`` (raw events, what a
  program reads): events/s received, bytes/s and the daemon's CPU;
- ``live_frame_cost``: the live view's own work per frame (binning and encoding) at the
  sensor rate, in process: what the view adds on top of reading the device.

``sensor_events_per_s`` is what the virtual devkit delivered: on a machine too busy to give the
daemon the CPU its simulated sensor needs it delivers less; frames keep their schedule either
way. ``load_average`` (1 min, before and after) says how busy the machine was. Without
Chromium (``SPECKLAB_CHROMIUM`` names one) ``browser`` is null and ``browser_skipped`` says why.

Goal: the browser's frames/s >= 25 at 2 M events/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from websockets.sync.client import ClientConnection, connect

from specklab.schemas.stream import ClientStream, Outputs, Ready

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.browser.conftest import chromium_path
from tests.daemon import Daemon, _wait_healthy, free_port

ADMIN = "spk_bench-admin-token-0123456789"
DEVICE = "virtual-speck2fdevkit:0"
RATE = float(os.environ.get("BENCH_DASH_RATE", 2_000_000))
SECONDS = float(os.environ.get("BENCH_DASH_SECONDS", 5))
WS_OPTIONS = {"compression": None, "max_size": 256 * 1024 * 1024, "open_timeout": 60}


def serve(port: int, data_dir: str, rate: float) -> None:
    """The daemon, with its virtual devkit's sensor sending ``rate`` events/s. The synthetic
    scene is drawn more slowly than that here (about 1 M events/s per core), so the sensor
    loops one second of it, drawn before the daemon starts. No setting offers either: the
    device factory is swapped before the app starts."""
    from specklab.client.cli import main
    from specklab.server.devices import manager
    from specklab.server.devices.base import DeviceDescription
    from specklab.server.devices.virtual import VirtualDevkit
    from specklab.server.simulator.sensor import ReplaySensor, SyntheticSensor

    scene = ReplaySensor(SyntheticSensor(rate_hz=rate).events(0, 1_000_000), loop=True)

    def devkit(description: DeviceDescription, max_output_events: int | None) -> VirtualDevkit:
        device = VirtualDevkit(description, max_output_events=max_output_events)
        device._sensor = scene
        return device

    manager._default_virtual_factory = devkit
    main(["serve", "--port", str(port), "--data-dir", data_dir, "--log-format", "text"])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live_events(message: bytes) -> int:
    """Sensor events counted in one live frame (its header's ``dvs.events``)."""
    length = int.from_bytes(message[:4], "little")
    dvs = json.loads(message[4 : 4 + length])["dvs"]
    return dvs["events"] if dvs else 0


def raw_events(client: ClientStream) -> Callable[[bytes], int]:
    def count(message: bytes) -> int:
        event = client.receive_data(message)
        return len(event.events) if isinstance(event, Outputs) else 0

    return count


def measure(
    websocket: ClientConnection, pid: int, seconds: float, events_in: Callable[[bytes], int]
) -> dict[str, float]:
    # Let the view settle (sensor on, first frames) before the clock starts.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        websocket.recv(timeout=30)
    frames = events = received = 0
    cpu = cpu_seconds(pid)
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        message = websocket.recv(timeout=30)
        if isinstance(message, str):
            continue
        received += len(message)
        frames += 1
        events += events_in(message)
    cpu = cpu_seconds(pid) - cpu
    return {
        "frames_per_s": round(frames / elapsed, 1),
        "sensor_events_per_s": round(events / elapsed),
        "bytes_per_s": round(received / elapsed),
        "daemon_cpu_per_s": round(cpu / elapsed, 3),
    }


#: The page's frame counter (``js/live.js``): frames drawn, sensor events they counted, the last
#: frame's ``seq``, and the page's clock in ms.
PAGE_COUNTERS = """() => { const c = document.querySelector('#live-frames');
    return c ? [c.dataset.count, c.dataset.events, c.dataset.seq, performance.now()].map(Number)
             : null; }"""


def browser_view(url: str, token: str, device: str, pid: int) -> dict[str, float]:
    """The device page's sensor view in headless Chromium, signed in as the holder."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: run as root (CI containers), where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/")
            page.fill("#token", token)
            page.click("#sign-in button[type=submit]")
            page.wait_for_selector("#nav:not([hidden])")
            page.goto(f"{url}/#/device/{device}/sensor")
            deadline = time.monotonic() + 120
            while not ((counters := page.evaluate(PAGE_COUNTERS)) and counters[0] > 0):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the page drew no frame: {page.inner_text('main')}")
                time.sleep(0.1)
            time.sleep(1.0)  # let the view settle (sensor on, first frames) before the clock
            frames, events, seq, page_ms = page.evaluate(PAGE_COUNTERS)
            cpu, start = cpu_seconds(pid), time.monotonic()
            time.sleep(SECONDS)
            frames_after, events_after, seq_after, page_ms_after = page.evaluate(PAGE_COUNTERS)
            cpu, wall = cpu_seconds(pid) - cpu, time.monotonic() - start
        finally:
            browser.close()
    seconds = (page_ms_after - page_ms) / 1e3
    return {
        "frames_per_s": round((frames_after - frames) / seconds, 1),
        "server_frames_per_s": round((seq_after - seq) / seconds, 1),
        "sensor_events_per_s": round((events_after - events) / seconds),
        "daemon_cpu_per_s": round(cpu / wall, 3),
    }


def frame_cost() -> dict[str, float]:
    """The live view's own work per frame at ``RATE``, in process: binning a frame's events
    (``RATE / 30``) and encoding the frame, best of 30 frames."""
    from specklab.server.dashboard.binning import DvsBinner
    from specklab.server.simulator.sensor import SyntheticSensor

    events = SyntheticSensor(rate_hz=RATE).events(0, 1_000_000)
    per_frame = int(RATE / 30)
    binner = DvsBinner(128, 128)
    best = float("inf")
    for frame in range(30):
        start = time.perf_counter()
        binner.add(events[frame * per_frame : (frame + 1) * per_frame])
        count, image = binner.take()
        header = json.dumps({"dvs": {"events": count}}).encode()
        _ = len(header).to_bytes(4, "little") + header + image
        best = min(best, time.perf_counter() - start)
    return {
        "events_per_frame": per_frame,
        "ms": round(best * 1e3, 3),
        "cpu_share_at_30_fps": round(best * 30, 4),
    }


def measure_raw(url: str, headers: dict[str, str], pid: int) -> dict[str, float]:
    # The live view's session may still be releasing the device (a virtual devkit that fell
    # behind catches up first): try again for up to two minutes.
    for _ in range(480):
        with connect(url, additional_headers=headers, **WS_OPTIONS) as websocket:
            client = ClientStream()
            if isinstance(client.receive_data(websocket.recv(timeout=30)), Ready):
                return measure(websocket, pid, SECONDS, raw_events(client))
        time.sleep(0.25)
    raise SystemExit(f"{url} refused the stream")


def bench(url: str, pid: int) -> dict[str, object]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    user = httpx.post(f"{url}/v1/users", json={"name": "bench"}, headers=admin).json()
    token = httpx.post(
        f"{url}/v1/tokens", json={"name": "bench", "user_id": user["id"]}, headers=admin
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    booked = httpx.post(
        f"{url}/v1/bookings", json={"device_id": DEVICE, "minutes": 30}, headers=headers
    )
    booked.raise_for_status()
    device = booked.json()["device_id"]  # the lab-wide id the pages use

    def released() -> None:
        # A view's DVS session ends after it closes; a stream opened before would join it.
        deployment = f"{url}/v1/devices/{DEVICE}/deployment"
        while httpx.get(deployment, headers=headers).status_code != 404:
            time.sleep(0.25)

    figures: dict[str, object] = {"sensor_rate_hz": RATE, "seconds": SECONDS}
    figures["load_average_before"] = os.getloadavg()[0]
    if chromium_path() is None:
        figures["browser"] = None
        figures["browser_skipped"] = "no Chromium found (apt-get install chromium)"
    else:
        figures["browser"] = browser_view(url, token, device, pid)
        released()
    ws = url.replace("http://", "ws://") + f"/v1/devices/{DEVICE}"
    with connect(f"{ws}/live?sensor=true", additional_headers=headers, **WS_OPTIONS) as websocket:
        figures["server_frames"] = measure(websocket, pid, SECONDS, live_events)
    released()
    figures["baseline_raw_dvs"] = measure_raw(f"{ws}/dvs?raw=true", headers, pid)
    figures["live_frame_cost"] = frame_cost()
    figures["load_average_after"] = os.getloadavg()[0]
    return figures


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "SPECKLAB_ADMIN_TOKEN": ADMIN, "SPECKLAB_VIRTUAL": "speck2fdevkit"}
        log_path = Path(directory) / "daemon.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(port), directory],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        daemon = Daemon(process, f"http://127.0.0.1:{port}", Path(directory), log_path)
        try:
            _wait_healthy(daemon, timeout=300)
            print(json.dumps(bench(daemon.url, process.pid), indent=2))
        except BaseException:
            print(daemon.log()[-4000:], file=sys.stderr)
            raise
        finally:
            daemon.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3], RATE)
    else:
        main()
