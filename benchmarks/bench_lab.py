"""A lab of many hosts on one PostgreSQL: device-list latency, booking throughput, how long a
booking change on one host takes to reach a stream on another, the cost of a forwarding hop,
and the database load per host. Prints JSON (``docs/scaling.md`` has a run and the plan).

    SPECKLAB_TEST_POSTGRES_URL=postgresql://... python benchmarks/bench_lab.py --hosts 16 \
        --devices 8 --seconds 20

Each host is a ``specklab serve`` with ``--devices`` virtual devkits and the default sweep
interval (5 s) unless ``--sweep-s`` says otherwise; the default size (16 x 8) is what one
2-core, 24 GB machine holds (each daemon takes about 300 MB and a few seconds of CPU to
start). ``--no-hop`` skips the forwarding hop (it needs one compile of the guide's network).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sqlalchemy import create_engine, text
from websockets.sync.client import connect

from specklab.schemas.frames import ErrorFrame, decode
from specklab.server.storage import normalize_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import Daemon, run_daemon
from tests.db_fixtures import POSTGRES_ENV, fresh_postgres_database
from tests.fixtures_models import guide_network, torchscript_bytes
from tests.guide_inputs import guide_spikes

ADMIN_TOKEN = "bench-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
    }


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def db_counters(url: str) -> dict[str, float]:
    """Transactions and connections of the lab's database, from PostgreSQL's statistics."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as connection:
            name = connection.execute(text("SELECT current_database()")).scalar_one()
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            xacts, tuples = connection.execute(
                text(
                    "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched "
                    "FROM pg_stat_database WHERE datname = :name"
                ),
                {"name": name},
            ).one()
            connections = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"), {"name": name}
            ).scalar_one()
    finally:
        engine.dispose()
    return {"at": time.monotonic(), "xacts": xacts, "tuples": tuples, "connections": connections}


def load_between(before: dict[str, float], after: dict[str, float], hosts: int) -> dict:
    seconds = after["at"] - before["at"]
    return {
        "transactions_per_s_per_host": round(
            (after["xacts"] - before["xacts"]) / seconds / hosts, 1
        ),
        "rows_read_per_s_per_host": round((after["tuples"] - before["tuples"]) / seconds / hosts),
        "connections_per_host": round(after["connections"] / hosts, 1),
    }


def device_list(daemons: list[Daemon], requests: int) -> dict:
    with httpx.Client(headers=ADMIN, timeout=60) as http:
        urls = [f"{daemons[i % len(daemons)].url}/v1/devices" for i in range(requests)]
        samples = [timed(lambda url=url: http.get(url)) for url in urls]
    return percentiles(samples)


def booking_throughput(daemons: list[Daemon], seconds: float, workers: int) -> dict:
    """Book the next free device of the type and cancel it again, through random hosts."""
    done: list[float] = []
    refused = [0]
    deadline = time.monotonic() + seconds

    def work(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(headers=ADMIN, timeout=60) as http:
            while time.monotonic() < deadline:
                daemon = rng.choice(daemons)
                start = time.perf_counter()
                body = {"device_type": "speck2fdevkit", "minutes": 5}
                booked = http.post(f"{daemon.url}/v1/bookings", json=body)
                if booked.status_code != 201:
                    refused[0] += 1
                    continue
                http.delete(f"{rng.choice(daemons).url}/v1/bookings/{booked.json()['id']}")
                done.append(time.perf_counter() - start)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "book_and_cancel_per_s": round(len(done) / seconds, 1),
        "refused": refused[0],
        **percentiles(done or [0.0]),
    }


def booking_to_stream(daemons: list[Daemon], rounds: int) -> dict:
    """A DVS stream open on host B; its booking cancelled through host A: how long until the
    stream's fatal frame arrives (by NOTIFY; the sweep would take up to ``--sweep-s``)."""
    a, b = daemons[0], daemons[1]
    device = f"virtual-speck2fdevkit:0@{host_name(b)}"
    samples = []
    with httpx.Client(headers=ADMIN, timeout=60) as http:
        for _ in range(rounds):
            booking = http.post(f"{b.url}/v1/bookings", json={"device_id": device, "minutes": 5})
            ws = b.url.replace("http", "ws", 1) + f"/v1/devices/{device}/dvs"
            with connect(ws, additional_headers=ADMIN, max_size=None) as stream:
                stream.recv(timeout=30)  # ready
                start = time.perf_counter()
                http.delete(f"{a.url}/v1/bookings/{booking.json()['id']}")
                while True:
                    frame = decode(stream.recv(timeout=120))
                    if isinstance(frame, ErrorFrame) and frame.fatal:
                        break
                samples.append(time.perf_counter() - start)
    return percentiles(samples)


def host_name(daemon: Daemon) -> str:
    return daemon.data_dir.name  # each host's data dir is named after it (``main``)


def forwarding_hop(daemons: list[Daemon], rounds: int, batches: int) -> dict:
    """Host B's device, straight to B and through host A, in alternating rounds (so that the
    machine's load weighs on both alike): forward-mode batches of the guide's network, and
    ``GET /v1/devices/{id}``."""
    from specklab.client import Client

    a, b = daemons[0], daemons[1]
    device = f"virtual-speck2fdevkit:0@{host_name(b)}"
    rng = np.random.default_rng(0)
    events = guide_spikes(rng, 2000, 20_000)
    routes = {"direct": b.url, "through_another_host": a.url}
    streamed: dict[str, list[float]] = {name: [] for name in routes}
    rest: dict[str, list[float]] = {name: [] for name in routes}
    with Client(a.url, ADMIN_TOKEN, timeout=600) as lab, httpx.Client(headers=ADMIN) as http:
        model = lab.upload(torchscript_bytes(guide_network()), options={"input_shape": [1, 28, 28]})
        lab.create_booking(device, minutes=30)
        for _ in range(rounds):
            for name, url in routes.items():
                with Client(url, ADMIN_TOKEN, timeout=600) as client:
                    hw = client.deploy(model, device)
                    hw.forward(events)  # the stream's start is not a batch's cost
                    batch = functools.partial(hw.forward, events)
                    streamed[name] += [timed(batch) for _ in range(batches)]
                status = functools.partial(http.get, f"{url}/v1/devices/{device}")
                rest[name] += [timed(status) for _ in range(batches)]
    figures: dict[str, Any] = {
        "forward_batch": {name: percentiles(samples) for name, samples in streamed.items()},
        "device_status": {name: percentiles(samples) for name, samples in rest.items()},
    }
    for kind in ("forward_batch", "device_status"):
        through, direct = figures[kind]["through_another_host"], figures[kind]["direct"]
        figures[kind]["hop_p50_ms"] = round(through["p50_ms"] - direct["p50_ms"], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sweep-s", type=float, default=5.0)
    parser.add_argument("--list-requests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-hop", action="store_true")
    args = parser.parse_args()
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        sys.exit(f"set {POSTGRES_ENV} to a PostgreSQL server URL")
    with (
        fresh_postgres_database(server) as url,
        tempfile.TemporaryDirectory() as tmp,
        ExitStack() as stack,
    ):
        started = time.monotonic()
        daemons = [
            stack.enter_context(
                run_daemon(
                    Path(tmp) / f"host-{i}",
                    "--database-url",
                    url,
                    env={
                        "SPECKLAB_ADMIN_TOKEN": ADMIN_TOKEN,
                        "SPECKLAB_HOST_NAME": f"host-{i}",
                        "SPECKLAB_VIRTUAL": f"speck2fdevkit={args.devices}",
                        "SPECKLAB_SWEEP_INTERVAL_S": str(args.sweep_s),
                    },
                    # A loaded machine starts a daemon in minutes, not seconds.
                    startup_timeout=600,
                )
            )
            for i in range(args.hosts)
        ]
        figures: dict[str, Any] = {
            "hosts": args.hosts,
            "devices_per_host": args.devices,
            "sweep_interval_s": args.sweep_s,
            "start_all_s": round(time.monotonic() - started, 1),
        }
        idle = db_counters(url)
        time.sleep(args.seconds)
        figures["db_idle"] = load_between(idle, db_counters(url), args.hosts)
        figures["device_list"] = device_list(daemons, args.list_requests)
        busy = db_counters(url)
        figures["bookings"] = booking_throughput(daemons, args.seconds, args.workers)
        figures["db_booking"] = load_between(busy, db_counters(url), args.hosts)
        figures["booking_change_to_stream"] = booking_to_stream(daemons, args.rounds)
        if not args.no_hop:
            figures["forwarding_hop"] = forwarding_hop(daemons, args.rounds, 10)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
