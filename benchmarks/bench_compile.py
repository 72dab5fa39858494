"""Compile time of the guide's network from each format, warm and cold.

Prints one JSON object (seconds). ``warm``: a running pool whose worker has imported torch;
the time from handing over the bytes to holding the report and the configuration's JSON.
``cold``: ``compile_model`` without a pool, so a worker process is started, imports what the
format needs, compiles and exits (what ``specklab compile`` costs). ``validate_config``: turning
the configuration's JSON into a validated ``ChipConfig`` (done lazily, on first use of
``result.config``). Goal: warm <= 0.5 s. ``BENCH_COMPILE_ROUNDS=warm,cold`` sets the rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from specklab.schemas.compile import CompileOptions
from specklab.server.compiler import CompilerPool, compile_model
from specklab.server.compiler.pipeline import CompileResult

# The guide's network in every format, from the tests' fixtures (run from a checkout).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.fixtures_models import (
    GUIDE_INPUT_SHAPE,
    export_bytes,
    guide_network,
    nir_bytes,
    torchscript_bytes,
)

#: Compiles per format with the warm pool and without one (``BENCH_COMPILE_ROUNDS``:
#: "warm,cold", for a smoke run).
WARM_ROUNDS, COLD_ROUNDS = map(int, os.environ.get("BENCH_COMPILE_ROUNDS", "15,2").split(","))


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
    }


def main() -> None:
    model = guide_network()
    files = {
        "torchscript_script": torchscript_bytes(model),
        "torchscript_trace": torchscript_bytes(model, trace=True),
        "torch_export": export_bytes(model),
        "nir": nir_bytes(model),
    }
    options = CompileOptions(input_shape=GUIDE_INPUT_SHAPE)
    warm: dict[str, dict[str, float]] = {}
    validate: list[float] = []
    with CompilerPool(1) as pool:
        started = time.perf_counter()
        pool.warm_up()
        pool_start = time.perf_counter() - started
        for name, data in files.items():
            pool.compile(data, options)  # the first compile of a format warms its code paths
            samples = []
            for _ in range(WARM_ROUNDS):
                started = time.perf_counter()
                result: CompileResult = pool.compile(data, options)
                samples.append(time.perf_counter() - started)
                started = time.perf_counter()
                assert result.config.core_of_layer == {0: 0, 1: 3, 2: 5, 3: 6, 4: 1}
                validate.append(time.perf_counter() - started)
            warm[name] = _summary(samples)
    cold: dict[str, dict[str, float]] = {}
    for name, data in files.items():
        samples = []
        for _ in range(COLD_ROUNDS):
            started = time.perf_counter()
            compile_model(data, options)
            samples.append(time.perf_counter() - started)
        cold[name] = _summary(samples)
    print(
        json.dumps(
            {
                "network": "guide (vendor basics), input 1x28x28",
                "warm": warm,
                "cold": cold,
                "pool_start_warm_worker": round(pool_start, 4),
                "validate_config": _summary(validate),
                "goal_warm": 0.5,
                "cpus": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
