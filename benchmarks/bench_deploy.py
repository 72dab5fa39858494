"""Deploying the guide's network: the deploy call end to end, and what validation costs in it.

Prints one JSON object (milliseconds). ``deploy_call``: ``POST /v1/devices/{id}/deployment``
of the compiled guide network onto a virtual devkit of a real daemon on loopback, from sending
the request to holding the answer (the model is compiled once beforehand; a deploy validates
its stored configuration, applies the monitors and loads it into the device).
``validate``: turning the stored configuration's JSON into a ``ChipConfig`` in this process,
as the deploy call does (weights parsed straight into numpy arrays), against its baseline in
the same run, ``validate_via_lists``: the same document parsed into Python nested lists first,
which is how every validation went before weights were arrays. Goal: deploy_call <= 50 ms.
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


def deploy_call(model: bytes, rounds: int) -> list[float]:
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
            request = {"model_id": response.json()["id"], "monitor_layers": [-1]}
            http.post("/v1/bookings", json={"device_id": DEVICE, "minutes": 60}).raise_for_status()
            url = f"/v1/devices/{DEVICE}/deployment"

            def deploy() -> None:
                http.post(url, json=request).raise_for_status()

            deploy()  # the first one warms the daemon's code paths
            return _timed(deploy, rounds)


def main() -> None:
    rounds = int(os.environ.get("BENCH_DEPLOY_ROUNDS", 20))
    model = torchscript_bytes(guide_network())
    graph = import_model(model, ArchiveLimits())
    document = compile_graph(graph, CompileOptions(input_shape=GUIDE_INPUT_SHAPE)).config_json
    validate = _timed(lambda: ChipConfig.model_validate_json(document), rounds)
    via_lists = _timed(lambda: ChipConfig.model_validate(json.loads(document)), rounds)
    print(
        json.dumps(
            {
                "benchmark": "deploy",
                "network": "guide (vendor basics), input 1x28x28, virtual devkit",
                "config_json_bytes": len(document),
                "deploy_call": _summary_ms(deploy_call(model, rounds)),
                "validate": _summary_ms(validate),
                "validate_via_lists": _summary_ms(via_lists),
                "goal_deploy_call_ms": GOAL_MS,
                "load_average_1min": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
