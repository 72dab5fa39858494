"""Soak: a daemon on loopback under a steady mix of work for a bounded time; prints one JSON
object (peak RSS, RSS after warm-up vs at the end, errors, p50/p99 latency per kind of work).

The mix, all at once, each in its own thread, until ``--seconds`` have passed:

- ``--streams`` users, each on a virtual devkit of their own with the guide's network deployed,
  sending forward batches of 2,000 input spikes through ``/stream`` and reading the outputs;
- a booker: books the spare device in the future, extends, lists, cancels;
- an uploader: uploads the guide's network again (content-addressed: stored and compiled once,
  so this soaks the upload path, not the compiler);
- a recorder: records 1 s of the spare device's DVS sensor, downloads the .npy, deletes it.
- a leaseholder: heartbeats every running booking each 10 s, as a client's session would.

Every answer that is not the expected one counts as an error (the first few are printed).
RSS is the daemon process's resident set (``/proc``), sampled each second; "after warm-up" is
the first sample once ``--warmup`` of the time has passed.

    python benchmarks/soak.py --seconds 240 --streams 2
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from websockets.sync.client import connect

from specklab.schemas.stream import BatchEnd, ClientStream, StreamError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import run_daemon
from tests.fixtures_models import guide_network, torchscript_bytes
from tests.guide_inputs import guide_spikes

ADMIN = "spk_soak-admin-token-0123456789"
WS_OPTIONS = {"compression": None, "max_size": 256 * 1024 * 1024, "open_timeout": 60}
GUIDE_OPTIONS = json.dumps({"input_shape": [1, 28, 28]})


class Tally:
    """Latencies and errors per kind of work, shared by the workers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {}
        self.errors: list[str] = []

    def timed(self, kind: str, work: Callable[[], object]) -> bool:
        """Run and time ``work``; whether it succeeded (a failure is counted)."""
        started = time.perf_counter()
        try:
            work()
        except Exception as exc:  # every failure is a finding of the soak
            with self.lock:
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
            return False
        with self.lock:
            self.latencies.setdefault(kind, []).append(time.perf_counter() - started)
        return True

    def summary(self) -> dict[str, object]:
        kinds = {}
        for kind, samples in sorted(self.latencies.items()):
            ordered = sorted(samples)
            kinds[kind] = {
                "count": len(ordered),
                "p50_ms": round(statistics.median(ordered) * 1e3, 2),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 2),
            }
        return {"work": kinds, "errors": len(self.errors), "first_errors": self.errors[:5]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def ok(response: httpx.Response, *statuses: int) -> httpx.Response:
    if response.status_code not in (statuses or (200,)):
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:200]}"
        )
    return response


def _post_ok(http: httpx.Client, path: str, headers: dict[str, str]) -> None:
    ok(http.post(path, headers=headers))


def new_user(http: httpx.Client, name: str) -> dict[str, str]:
    user = ok(http.post("/v1/users", json={"name": name}), 201).json()
    token = ok(http.post("/v1/tokens", json={"name": "soak", "user_id": user["id"]}), 201)
    return {"Authorization": f"Bearer {token.json()['token']}"}


def stream_worker(
    url: str, headers: dict[str, str], device: str, stop: threading.Event, tally: Tally
) -> None:
    rng = np.random.default_rng(hash(device) % 2**32)
    n = 2_000
    with connect(
        f"{url}/v1/devices/{device}/stream", additional_headers=headers, **WS_OPTIONS
    ) as websocket:
        client = ClientStream()
        client.receive_data(websocket.recv())

        def batch() -> None:
            events = guide_spikes(rng, n, 100_000)
            client.send_events("spike", events)
            for message in client.data_to_send():
                websocket.send(message)
            while True:
                event = client.receive_data(websocket.recv(timeout=60))
                if isinstance(event, BatchEnd):
                    return
                if isinstance(event, StreamError):
                    raise RuntimeError(f"{event.code}: {event.message}")

        while not stop.is_set() and tally.timed("stream_batch", batch):
            pass


def lease_worker(
    http: httpx.Client,
    leases: list[tuple[int, dict[str, str]]],
    stop: threading.Event,
    tally: Tally,
) -> None:
    """Heartbeats of every running booking (a booking whose lease lapses ends early)."""
    while True:
        for booking_id, headers in leases:
            path = f"/v1/bookings/{booking_id}/heartbeat"
            tally.timed("heartbeat", functools.partial(_post_ok, http, path, headers))
        if stop.wait(10.0):
            return


def booking_worker(
    http: httpx.Client, headers: dict[str, str], device: str, stop: threading.Event, tally: Tally
) -> None:
    def cycle() -> None:
        start = time.time() + 24 * 3600
        starts_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        booking = ok(
            http.post(
                "/v1/bookings",
                headers=headers,
                json={"device_id": device, "starts_at": starts_at, "minutes": 10},
            ),
            201,
        ).json()
        ok(http.post(f"/v1/bookings/{booking['id']}/extend", headers=headers, json={"minutes": 5}))
        ok(http.get("/v1/bookings", headers=headers, params={"current": True}))
        ok(http.delete(f"/v1/bookings/{booking['id']}", headers=headers))

    while not stop.is_set():
        tally.timed("booking_cycle", cycle)


def upload_worker(
    http: httpx.Client, headers: dict[str, str], stop: threading.Event, tally: Tally
) -> None:
    model = torchscript_bytes(guide_network())

    def upload() -> None:
        made = ok(
            http.post(
                "/v1/models",
                headers=headers,
                files={"file": ("guide.pt", model)},
                data={"options": GUIDE_OPTIONS},
            ),
            201,
        ).json()
        ok(http.delete(f"/v1/models/{made['id']}", headers=headers), 204)

    while not stop.is_set():
        tally.timed("upload", upload)
        stop.wait(1.0)


def recording_worker(
    http: httpx.Client, headers: dict[str, str], device: str, stop: threading.Event, tally: Tally
) -> None:
    def record() -> None:
        made = ok(
            http.post(
                "/v1/recordings", headers=headers, json={"device_id": device, "duration_s": 1.0}
            ),
            201,
        ).json()
        ok(http.get(f"/v1/recordings/{made['id']}/events.npy", headers=headers))
        ok(http.delete(f"/v1/recordings/{made['id']}", headers=headers), 204)

    while not stop.is_set():
        tally.timed("recording", record)


def soak(seconds: float, streams: int, warmup: float) -> dict[str, object]:
    devices = [f"virtual-speck2fdevkit:{i}" for i in range(streams + 1)]
    spare = devices[-1]
    tally = Tally()
    with tempfile.TemporaryDirectory() as directory:
        env = {"SPECKLAB_ADMIN_TOKEN": ADMIN, "SPECKLAB_LOG_LEVEL": "warning"}
        virtual = f"speck2fdevkit={len(devices)}"
        with run_daemon(Path(directory), "--virtual", virtual, env=env) as daemon:
            http = httpx.Client(
                base_url=daemon.url, timeout=300, headers={"Authorization": f"Bearer {ADMIN}"}
            )
            users = [new_user(http, f"streamer{i}") for i in range(streams)]
            model = torchscript_bytes(guide_network())
            leases: list[tuple[int, dict[str, str]]] = []
            for user, device in zip(users, devices, strict=False):
                # Deployments use their owner's models (the same bytes compile once).
                upload = {"file": ("guide.pt", model)}
                guide = ok(
                    http.post(
                        "/v1/models", headers=user, files=upload, data={"options": GUIDE_OPTIONS}
                    ),
                    201,
                ).json()
                booked = ok(
                    http.post(
                        "/v1/bookings", headers=user, json={"device_id": device, "minutes": 240}
                    ),
                    201,
                )
                leases.append((booked.json()["id"], user))
                ok(
                    http.post(
                        f"/v1/devices/{device}/deployment",
                        headers=user,
                        json={"model_id": guide["id"], "monitor_layers": [-1]},
                    ),
                    201,
                )
            other = new_user(http, "other")
            booked = ok(
                http.post("/v1/bookings", json={"device_id": spare, "minutes": 240}, headers=other),
                201,
            )
            leases.append((booked.json()["id"], other))
            ws = daemon.url.replace("http://", "ws://")
            stop = threading.Event()
            workers = [
                threading.Thread(target=stream_worker, args=(ws, user, device, stop, tally))
                for user, device in zip(users, devices, strict=False)
            ]
            workers += [
                threading.Thread(
                    target=booking_worker,
                    args=(http, new_user(http, "booker"), devices[0], stop, tally),
                ),
                threading.Thread(
                    target=upload_worker, args=(http, new_user(http, "uploader"), stop, tally)
                ),
                threading.Thread(target=recording_worker, args=(http, other, spare, stop, tally)),
                threading.Thread(target=lease_worker, args=(http, leases, stop, tally)),
            ]
            pid = daemon.process.pid
            started = time.monotonic()
            samples: list[tuple[float, float]] = [(0.0, rss_mb(pid))]
            for worker in workers:
                worker.start()
            while (elapsed := time.monotonic() - started) < seconds:
                time.sleep(min(1.0, seconds - elapsed))
                samples.append((time.monotonic() - started, rss_mb(pid)))
            stop.set()
            for worker in workers:
                worker.join(120)
            http.close()
    after_warmup = next(rss for at, rss in samples if at >= warmup * seconds)
    end = samples[-1][1]
    return {
        "benchmark": "soak",
        "seconds": seconds,
        "streams": streams,
        "rss_start_mb": round(samples[0][1], 1),
        "rss_peak_mb": round(max(rss for _, rss in samples), 1),
        "rss_after_warmup_mb": round(after_warmup, 1),
        "rss_end_mb": round(end, 1),
        "rss_growth_after_warmup_pct": round((end - after_warmup) / after_warmup * 100, 1),
        **tally.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.25,
        help="fraction of the time counted as warm-up (default 0.25)",
    )
    args = parser.parse_args()
    print(json.dumps(soak(args.seconds, args.streams, args.warmup), indent=2))


if __name__ == "__main__":
    main()
