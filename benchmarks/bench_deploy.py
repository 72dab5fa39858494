"""Deploying the guide's network: the deploy call end to end, and what validation costs in it.

Prints one JSON object (milliseconds). ``deploy_call``: ``Client.deploy`` (the SDK, as the
guide's ``hw_model.to(device)``) of the compiled guide network onto a virtual devkit of a real
daemon on loopback, from the call to holding the ``HardwareModel`` (the model is compiled once
beforehand; a deploy looks its configuration up, applies the monitors and loads it into the
device), goal <= 50 ms, against its baseline from the same run, ``rest_round_trip``: the same
client reading the deployment back (``GET``: the same HTTP, auth and booking lookup, no
device work). ``first_deploy_call``: the first deploy of the model since the daemon started,
which also validates its stored configuration (later ones reuse it).
``validate``: turning the stored configuration's JSON into a ``ChipConfig`` in this process,
as the first deploy does (weights parsed straight into numpy arrays), against its baseline in
the same run, ``validate_via_lists``: the same document parsed into Python nested lists first,
which is how every validation went before weights were arrays.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from specklab.client import Client
from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions
from specklab.server.compiler import ArchiveLimits
from specklab.server.compiler.pipeline import compile_graph, import_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import run_daemon
from tests.fixtures_models import GUIDE_INPUT_SHAPE, guide_network, torchscript_bytes

ADMIN = "spk_bench-admin-token-0123456789"
DEVICE = "virtual-speck2fdevkit:0"
GOAL_MS = 50.0


def _summary_ms(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples) * 1e3, 2),
        "min": round(min(samples) * 1e3, 2),
        "max": round(max(samples) * 1e3, 2),
    }


def _timed(action: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def deploy_calls(model: bytes, rounds: int) -> dict[str, list[float]]:
    """Samples (seconds) of the first deploy, later deploys and the REST baseline."""
    with tempfile.TemporaryDirectory() as directory:
        env = {"SPECKLAB_ADMIN_TOKEN": ADMIN, "SPECKLAB_LOG_LEVEL": "warning"}
        with run_daemon(Path(directory), "--virtual", "speck2fdevkit=1", env=env) as daemon:
            http = httpx.Client(
                base_url=daemon.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=300
            )
            options = {"input_shape": list(GUIDE_INPUT_SHAPE)}
            response = http.post(
                "/v1/models",
                files={"file": ("guide", model)},
                data={"options": json.dumps(options)},
            )
            response.raise_for_status()
            model_id = response.json()["id"]
            http.post("/v1/bookings", json={"device_id": DEVICE, "minutes": 60}).raise_for_status()
            with Client(daemon.url, ADMIN, timeout=300) as client:

                def deploy() -> None:
                    client.deploy(model_id, DEVICE, monitor_layers=[-1])

                first = _timed(deploy, 1)
                deploy()  # warms the daemon's code paths
                return {
                    "first": first,
                    "deploy": _timed(deploy, rounds),
                    "rest": _timed(lambda: client.deployment(DEVICE), rounds),
                }


def main() -> None:
    rounds = int(os.environ.get("BENCH_DEPLOY_ROUNDS", 20))
    model = torchscript_bytes(guide_network())
    graph = import_model(model, ArchiveLimits())
    document = compile_graph(graph, CompileOptions(input_shape=GUIDE_INPUT_SHAPE)).config_json
    validate = _timed(lambda: ChipConfig.model_validate_json(document), rounds)
    via_lists = _timed(lambda: ChipConfig.model_validate(json.loads(document)), rounds)
    calls = deploy_calls(model, rounds)
    deploy = _summary_ms(calls["deploy"])
    print(
        json.dumps(
            {
                "benchmark": "deploy",
                "network": "guide (vendor basics), input 1x28x28, virtual devkit",
                "config_json_bytes": len(document),
                "deploy_call": {**deploy, "goal": GOAL_MS, "met": deploy["median"] <= GOAL_MS},
                "rest_round_trip": _summary_ms(calls["rest"]),
                "first_deploy_call": _summary_ms(calls["first"]),
                "validate": _summary_ms(validate),
                "validate_via_lists": _summary_ms(via_lists),
                "load_average_1min": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
