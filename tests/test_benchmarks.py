"""The benchmarks still run and print what their docs say (tiny sizes; figures not judged)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .browser.conftest import chromium_path
from .db_fixtures import POSTGRES_ENV

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_benchmark(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> dict[str, Any]:
    """Run a benchmark (``args`` and ``env`` set its sizes) and read the JSON object it prints."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    # The end of its stderr (the traceback) in the failure, which a CalledProcessError cuts.
    assert result.returncode == 0, f"{script} exited {result.returncode}:\n{result.stderr[-6000:]}"
    return json.loads(result.stdout)


def test_the_simulator_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("bench_simulator.py", env={"BENCH_SIM_EVENTS": "3000"}, timeout=240)
    assert figures["input_events"] == 3000
    assert set(figures["regimes"]) == {"moderate", "busy", "compiled"}
    for regime in figures["regimes"].values():
        assert len(regime["spikes_per_input_event_by_layer"]) == 5
        assert regime["synaptic_ops_per_input_event"] > 0
        streams = [regime[f"stream_{rate}_events_per_s"] for rate in (100_000, 1_000_000)]
        for stream in streams:
            assert stream["engine_events_per_s"] > 0 and stream["dense_events_per_s"] > 0
        # Without a slow clock only the events' order matters to the chip, not their rate.
        assert streams[0]["engine_spikes_out"] == streams[1]["engine_spikes_out"]


def test_the_dashboard_benchmark_prints_its_figures() -> None:
    figures = run_benchmark(
        "bench_dashboard.py", env={"BENCH_DASH_RATE": "50000", "BENCH_DASH_SECONDS": "0.5"}
    )
    assert figures["sensor_rate_hz"] == 50_000
    for run in (figures["server_frames"], figures["baseline_raw_dvs"]):
        assert run["frames_per_s"] > 0 and run["sensor_events_per_s"] > 0
        assert run["daemon_cpu_per_s"] > 0 and run["bytes_per_s"] > 0
    if chromium_path() is None:
        assert figures["browser"] is None and figures["browser_skipped"]
    else:  # frames the page drew, counted in the page
        browser = figures["browser"]
        assert browser["frames_per_s"] > 0 and browser["server_frames_per_s"] > 0
        assert browser["sensor_events_per_s"] > 0 and browser["daemon_cpu_per_s"] > 0


def test_the_soak_benchmark_prints_its_figures_without_errors() -> None:
    figures = run_benchmark("soak.py", "--seconds", "8", "--streams", "1")
    assert figures["benchmark"] == "soak" and figures["streams"] == 1
    assert figures["errors"] == 0, figures["first_errors"]
    # Every kind of work ran and was timed.
    kinds = {"stream_batch", "booking_cycle", "upload", "recording", "heartbeat"}
    assert set(figures["work"]) == kinds
    for work in figures["work"].values():
        assert work["count"] >= 1 and 0 < work["p50_ms"] <= work["p99_ms"]
    assert 0 < figures["rss_after_warmup_mb"] <= figures["rss_peak_mb"]


def test_the_stream_benchmark_prints_every_goal_with_its_baseline() -> None:
    figures = run_benchmark(
        "bench_stream.py",
        env={"BENCH_STREAM_EVENTS": "2000", "BENCH_STREAM_ROUNDS": "2", "BENCH_STREAM_TRIALS": "3"},
    )
    assert figures["sizes"] == {"batch_events": 2000, "rounds": 2, "trials": 3}
    goals = {
        "transport_events_per_s",
        "transport_fraction_of_echo",
        "guide_input_events_per_s",
        "concurrent_aggregate_events_per_s",
        "small_batch_p99_ms_under_load",
    }
    assert goals <= set(figures)
    for name in goals:
        figure = figures[name]
        assert figure["value"] > 0 and figure["baseline"] > 0 and figure["goal"] > 0, name
        assert isinstance(figure["met"], bool), name
    assert figures["transport_events_per_s"]["outputs_per_batch"] > 0
    assert figures["cpu_ms_per_batch"]["daemon"] >= 0 and figures["cpu_ms_per_batch"]["echo"] >= 0


def test_the_deploy_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("bench_deploy.py", env={"BENCH_DEPLOY_ROUNDS": "2"})
    for figure in (
        "deploy_call",
        "rest_round_trip",
        "first_deploy_call",
        "validate",
        "validate_via_lists",
    ):
        assert 0 < figures[figure]["min"] <= figures[figure]["median"] <= figures[figure]["max"]
    assert isinstance(figures["deploy_call"]["met"], bool)


def test_the_evaluate_benchmark_prints_its_figures() -> None:
    figures = run_benchmark(
        "bench_evaluate.py",
        env={"BENCH_EVAL_SAMPLES": "8", "BENCH_EVAL_REPEAT": "1", "BENCH_EVAL_ROUNDS": "1"},
    )
    assert figures["samples"] == 8
    assert 0 <= figures["virtual_devkit_accuracy"] <= 1 and 0 <= figures["ann_accuracy"] <= 1
    # The job finds what the simulator finds when called directly.
    assert figures["virtual_devkit_accuracy"] == figures["direct_accuracy"]
    assert figures["virtual_devkit_accuracy_1_worker"] == figures["direct_accuracy"]
    for key in ("direct", "direct_all_processes", "job_1_worker", "job_all_workers"):
        assert figures[f"{key}_samples_per_s"] > 0


def test_the_codec_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("bench_codec.py")
    assert figures["benchmark"] == "codec" and set(figures["sizes"]) == {"1000", "10000", "100000"}
    for size in figures["sizes"].values():
        assert size["events_per_s"] > 0 and size["baseline_per_event_msgpack_events_per_s"] > 0
        assert size["bytes_per_event"] >= 14


def test_the_compile_benchmark_prints_its_figures() -> None:
    figures = run_benchmark("bench_compile.py", env={"BENCH_COMPILE_ROUNDS": "1,1"})
    formats = {"torchscript_script", "torchscript_trace", "torch_export", "nir"}
    for when in ("warm", "cold"):
        assert set(figures[when]) == formats
        for format_ in formats:
            assert figures[when][format_]["min"] > 0, (when, format_)


def test_the_lab_benchmark_prints_its_figures() -> None:
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"no PostgreSQL: set {POSTGRES_ENV} (see .ci/postgres.sh)")
    sizes = ["--hosts", "2", "--devices", "1", "--seconds", "1", "--list-requests", "4"]
    sizes += ["--workers", "2", "--rounds", "1", "--sweep-s", "0.5", "--no-hop"]
    figures = run_benchmark("bench_lab.py", *sizes)
    assert (figures["hosts"], figures["devices_per_host"]) == (2, 1)
    assert figures["device_list"]["n"] == 4 and figures["device_list"]["p99_ms"] > 0
    assert figures["bookings"]["book_and_cancel_per_s"] > 0
    assert figures["booking_change_to_stream"]["n"] == 1
    for load in (figures["db_idle"], figures["db_booking"]):
        assert load["transactions_per_s_per_host"] > 0 and load["connections_per_host"] >= 1
