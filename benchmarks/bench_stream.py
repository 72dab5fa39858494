"""Event streams end to end, through a real daemon on loopback; prints one JSON object.

Every figure of issue 19's stream goals, each with its baseline from the same run and whether
the goal is met:

- transport: DVS events client -> daemon -> client through ``/stream`` (forward mode) with a
  deployment that only passes events through (the DVS layer monitored); baseline: a bare
  FastAPI WebSocket echo of the same frames (same server, same settings), in rounds
  alternating with the daemon's so that both see the same load. Goals >= 10 M events/s and
  >= 50 % of the echo;
- guide network: input spikes/s end to end through the daemon; baseline: the same batch on a
  virtual devkit in this process (no daemon, no transport). Goal >= 2 M;
- concurrent: 4 streams on 4 devices at once, aggregate events/s; baseline: one stream from
  the same client process, measured the same way (events over the rounds' wall time), in
  rounds alternating with the 4 streams', each the best of its rounds. Goal >= 1.6x. (This
  used to be against the transport figure, the best single batch of a stream in this process,
  while the 4 streams counted all their batches: a baseline measured another way (in three
  runs the two ratios differed by 0.17-0.25, either way); the ratio to it is still printed,
  ``ratio_to_transport``);
- latency: p99 of 300 round trips of a 10-spike forward batch while the 4 streams run without
  pause; baseline: the p99 with nothing else running. Goal <= 10 ms. (The probe used to run
  only while the 4 streams sent their 4 batches each, about 40 round trips, whose "p99" was
  their maximum.)

Beside the goals, ``cpu_ms_per_batch``: the CPU time the daemon spends on a transport batch
and the echo on one message. Events/s on this shared 2-core machine move by a factor of two
with what other users run; CPU time per batch moves much less, so it shows what a change to
the daemon did where the rates cannot.

The 4 streams run as threads of a client process other than the latency probe's (this one), as
other users' streams do. They used to run in this process, where the probe measured the
benchmark's own interpreter more than the daemon: it waited for this process's GIL behind 8
threads (the 4 streams and the websockets client's 4 readers) handling 2.8 MB frames (p99
20-50 ms with the load in the probe's process against 10-16 ms with the same load in another
process, same daemon, same machine). The streams stay threads of one process, so that, as
before, the load's clients take at most about one of the machine's two cores.

Sizes (for smoke runs): ``BENCH_STREAM_EVENTS`` (transport batch, 200k), ``BENCH_STREAM_ROUNDS``
(batches per measurement, 8), ``BENCH_STREAM_TRIALS`` (latency samples, 300).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from torch import nn
from websockets.sync.client import connect

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import EventKind, dvs_events, spikes
from specklab.schemas.frames import EventsFrame, encode
from specklab.schemas.inputs import InputCheck
from specklab.schemas.stream import BatchEnd, ClientStream, Outputs, StreamError
from specklab.server.devices.base import DeviceDescription
from specklab.server.devices.virtual import VirtualDevkit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_dashboard import cpu_seconds

from tests.daemon import free_port, run_daemon
from tests.fixtures_models import guide_network, torchscript_bytes
from tests.guide_inputs import guide_spikes

ADMIN = "spk_bench-admin-token-0123456789"
BATCH_EVENTS = int(os.environ.get("BENCH_STREAM_EVENTS", 200_000))
ROUNDS = int(os.environ.get("BENCH_STREAM_ROUNDS", 8))
TRIALS = int(os.environ.get("BENCH_STREAM_TRIALS", 300))
WARM_UP = 20
#: Alternating rounds of one load stream and of all four (each figure is its best round).
CONCURRENT_ROUNDS = 3
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
    url: str,
    headers: dict[str, str],
    kind: str,
    events: np.ndarray,
    rounds: int,
    *,
    connected: Callable[[], object] | None = None,
    until: Any = None,
) -> tuple[float, int]:
    """Input events/s of forward batches (the best round), and the outputs of the last batch:
    ``rounds`` batches, or with ``until`` (an event), batches until it is set. ``connected``
    is called once the stream is open, before the first batch."""
    with connect(url, additional_headers=headers, **WS_OPTIONS) as websocket:
        client = ClientStream()
        client.receive_data(websocket.recv())
        if connected is not None:
            connected()
        best = 0.0
        outputs = 0
        done = 0
        while (done < rounds) if until is None else not until.is_set():
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
            done += 1
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
    """Round trips of a 10-spike forward batch, ``trials`` of them after a warm-up."""
    small = spikes(t=np.arange(10), layer=0, feature=0, x=np.arange(10), y=3)
    with connect(url, additional_headers=headers, **WS_OPTIONS) as websocket:
        client = ClientStream()
        client.receive_data(websocket.recv())
        samples: list[float] = []
        for trial in range(WARM_UP + trials):
            start = time.perf_counter()
            client.send_events("spike", small)
            for message in client.data_to_send():
                websocket.send(message)
            while not isinstance(client.receive_data(websocket.recv()), BatchEnd):
                pass
            if trial >= WARM_UP:
                samples.append((time.perf_counter() - start) * 1e3)
        return samples


def _load_process(
    urls: list[str],
    headers: dict[str, str],
    batch: np.ndarray,
    rounds: int | None,
    go: Any,
    stop: Any,
    report: Any,
) -> None:
    """The load streams, one thread each, in a client process of their own: once every stream
    is open it reports, and when ``go`` is set they send ``rounds`` forward batches each (None:
    until ``stop`` is set); it reports again when every batch is done (``perf_counter`` is the
    system's monotonic clock, the same in every process)."""
    opened = threading.Barrier(len(urls) + 1)

    def connected() -> None:
        opened.wait()
        go.wait()

    threads = [
        threading.Thread(
            target=forward_rate,
            args=(url, headers, "dvs", batch, rounds or 0),
            kwargs={"connected": connected, "until": stop if rounds is None else None},
        )
        for url in urls
    ]
    for thread in threads:
        thread.start()
    opened.wait()
    report.put(None)
    for thread in threads:
        thread.join()
    report.put(time.perf_counter())


class LoadStreams:
    """One forward stream per url, as threads of one client process other than this one:
    ``rounds`` batches each, or with None, batches until :meth:`stop`."""

    def __init__(
        self, urls: list[str], headers: dict[str, str], batch: np.ndarray, rounds: int | None
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._go = context.Event()
        self._stop = context.Event()
        self._report = context.Queue()
        self._process = context.Process(
            target=_load_process,
            args=(urls, headers, batch, rounds, self._go, self._stop, self._report),
            daemon=True,
        )
        self._process.start()
        self._next_report()  # starting the interpreter, importing, connecting: not measured
        #: Set once every stream's batches are done.
        self.done = threading.Event()
        self._finished = 0.0
        self._failure: BaseException | None = None

    def start(self) -> float:
        """Let the streams go; returns when."""
        threading.Thread(target=self._wait, daemon=True).start()
        started = time.perf_counter()
        self._go.set()
        return started

    def stop(self) -> None:
        self._stop.set()

    def finish(self) -> float:
        """Wait for every stream; returns when the last one's batches were done."""
        self.done.wait()
        self._process.join()
        if self._failure is not None:
            raise self._failure
        return self._finished

    def _wait(self) -> None:
        try:
            self._finished = self._next_report()
        except BaseException as exc:
            self._failure = exc
        finally:
            self.done.set()

    def _next_report(self) -> Any:
        while True:
            try:
                return self._report.get(timeout=1)
            except queue.Empty:
                if self._process.exitcode:
                    raise RuntimeError(
                        f"the load streams failed (exit code {self._process.exitcode})"
                    ) from None


def device_alone_rate(config: dict, events: np.ndarray, rounds: int) -> float:
    """Input events/s of the same batch on a virtual devkit in this process."""
    devkit = VirtualDevkit(DeviceDescription("bench", "speck2fdevkit", "speck2f", virtual=True))
    devkit.open()
    devkit.apply(ChipConfig.model_validate(config))
    devkit.forward(events[:10], timeout=60)  # loads the simulator's compiled kernels
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        devkit.forward(events, timeout=60)
        best = max(best, len(events) / (time.perf_counter() - start))
    return best


@contextlib.contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    """The baseline's bare echo, in its own uvicorn process (the daemon's WebSocket settings):
    its url and process id."""
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
    url = f"ws://127.0.0.1:{port}/echo"
    try:
        for _ in range(600):
            try:
                with connect(url):
                    break
            except OSError:
                time.sleep(0.1)
        yield url, echo.pid
    finally:
        echo.terminate()
        echo.wait()


def transport_and_echo(
    url: str, echo_url: str, headers: dict[str, str], batch: np.ndarray, rounds: int
) -> tuple[float, int, float]:
    """Best events/s through the daemon and through the bare echo, in alternating rounds so
    that both see the same load on a shared machine; and the outputs of a daemon batch."""
    transport = echo = 0.0
    passed = 0
    for _ in range(rounds):
        rate, passed = forward_rate(url, headers, "dvs", batch, 1)
        transport = max(transport, rate)
        echo = max(echo, echo_rate(echo_url, batch, 1))
    return transport, passed, echo


def cpu_ms_per_batch(pid: int, batches: int, run: Callable[[], object]) -> float:
    """CPU time process ``pid`` spent per batch while ``run`` sent ``batches`` of them: unlike
    events/s, it hardly depends on what else the shared machine runs."""
    before = cpu_seconds(pid)
    run()
    return round((cpu_seconds(pid) - before) * 1e3 / batches, 2)


def figure(value: float, baseline: float, goal: float, met: bool, **extra: object) -> dict:
    return {
        "value": round(value, 3),
        "baseline": round(baseline, 3),
        "goal": goal,
        "met": met,
        **extra,
    }


def main() -> None:
    rng = np.random.default_rng(0)
    result: dict[str, object] = {"benchmark": "stream"}
    with tempfile.TemporaryDirectory() as directory:
        env = {"SPECKLAB_ADMIN_TOKEN": ADMIN, "SPECKLAB_LOG_LEVEL": "warning"}
        with (
            run_daemon(Path(directory), "--virtual", "speck2fdevkit=5", env=env) as daemon,
            echo_server() as (echo_url, echo_pid),
        ):
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
                request = (
                    {"model_id": models["guide"], "monitor_layers": [-1]}
                    if device == GUIDE
                    else {
                        "model_id": models["passthrough"],
                        "monitor_layers": ["dvs"],
                        "config_patch": PASSTHROUGH_PATCH,
                    }
                )
                http.post(
                    "/v1/bookings", json={"device_id": device, "minutes": 60}
                ).raise_for_status()
                http.post(f"/v1/devices/{device}/deployment", json=request).raise_for_status()

            def stream_url(device: str) -> str:
                return f"{ws}/v1/devices/{device}/stream"

            batch = random_dvs(BATCH_EVENTS, rng)
            one = stream_url(PASSTHROUGH[0])
            forward_rate(one, headers, "dvs", batch[:10], 1)  # sets the device up: not measured
            transport, passed, echo_events = transport_and_echo(
                one, echo_url, headers, batch, ROUNDS
            )
            batches = 2 * ROUNDS  # the CPU clock ticks at 10 ms: enough batches to read it
            result["cpu_ms_per_batch"] = {
                "daemon": cpu_ms_per_batch(
                    daemon.process.pid,
                    batches,
                    lambda: forward_rate(one, headers, "dvs", batch, batches),
                ),
                "echo": cpu_ms_per_batch(
                    echo_pid, batches, lambda: echo_rate(echo_url, batch, batches)
                ),
                "what": "CPU time of the daemon per transport batch and of the echo per message",
            }

            n = max(BATCH_EVENTS // 2, 1)
            guide_input = guide_spikes(rng, n, 1_000_000)
            rounds = max(ROUNDS // 2, 1)
            guide_rate, guide_out = forward_rate(
                stream_url(GUIDE), headers, "spike", guide_input, rounds
            )
            guide_config = http.get(f"/v1/models/{models['guide']}/config").json()
            alone = device_alone_rate(
                guide_config,
                InputCheck(ChipConfig.model_validate(guide_config)).spikes(guide_input),
                rounds,
            )
            latencies = latency_ms(stream_url(GUIDE), headers, TRIALS)

            urls = [stream_url(d) for d in PASSTHROUGH]
            for url in urls[1:]:  # each device's first batch sets it up: not measured
                forward_rate(url, headers, "dvs", batch[:10], 1)

            def streamed(urls: list[str]) -> float:
                """Events/s of ``urls``' streams together, ``rounds`` batches each."""
                load = LoadStreams(urls, headers, batch, rounds)
                start = load.start()
                return len(urls) * rounds * len(batch) / (load.finish() - start)

            one_rounds, all_rounds = [], []
            for _ in range(CONCURRENT_ROUNDS):
                one_rounds.append(streamed(urls[:1]))
                all_rounds.append(streamed(urls))
            load = LoadStreams(urls, headers, batch, None)
            load.start()
            loaded = latency_ms(stream_url(GUIDE), headers, TRIALS)
            load.stop()
            load.finish()

    p99, loaded_p99 = (float(np.percentile(x, 99)) for x in (latencies, loaded))
    result["sizes"] = {"batch_events": len(batch), "rounds": ROUNDS, "trials": TRIALS}
    result["transport_events_per_s"] = figure(
        transport,
        echo_events,
        10_000_000,
        transport >= 10_000_000,
        baseline_is="bare echo of the same frames",
        outputs_per_batch=passed,
    )
    result["transport_fraction_of_echo"] = figure(
        transport / echo_events, 1.0, 0.5, transport >= 0.5 * echo_events
    )
    result["guide_input_events_per_s"] = figure(
        guide_rate,
        alone,
        2_000_000,
        guide_rate >= 2_000_000,
        baseline_is="the same batch on a virtual devkit in process",
        outputs_per_batch=guide_out,
    )
    aggregate, one_stream = max(all_rounds), max(one_rounds)
    result["concurrent_aggregate_events_per_s"] = figure(
        aggregate,
        one_stream,
        round(1.6 * one_stream),
        aggregate >= 1.6 * one_stream,
        baseline_is="one stream of the same client process, rounds alternating; goal 1.6x it",
        streams=len(PASSTHROUGH),
        ratio=round(aggregate / one_stream, 3),
        ratio_to_transport=round(aggregate / transport, 3),
        rounds_events_per_s={"one": [*map(round, one_rounds)], "all": [*map(round, all_rounds)]},
    )
    result["small_batch_p99_ms_under_load"] = figure(
        loaded_p99,
        p99,
        10.0,
        loaded_p99 <= 10.0,
        baseline_is="p99 with no other stream",
        p50_ms=round(statistics.median(loaded), 3),
        baseline_p50_ms=round(statistics.median(latencies), 3),
        samples=len(loaded),
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
