"""Start real ``specklab serve`` processes for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    url: str
    data_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"daemon ignored signal {sig}:\n{self.log()}") from None
        return self.process.returncode


@contextmanager
def run_daemon(
    data_dir: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 120.0,
    python_path: Sequence[Path] = (),
) -> Iterator[Daemon]:
    """Run ``specklab serve`` on a free port for the block; yields once /v1/health answers."""
    port = free_port()
    log_path = data_dir / f"daemon-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    if python_path:
        extra = os.pathsep.join(str(p) for p in python_path)
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [extra, full_env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "specklab.client.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--log-format", "text", *args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=full_env, text=True
        )
    daemon = Daemon(process, f"http://127.0.0.1:{port}", data_dir, log_path)
    try:
        _wait_healthy(daemon, startup_timeout)
        yield daemon
    except BaseException:
        _show_stacks(daemon)
        raise
    finally:
        daemon.stop()


def _show_stacks(daemon: Daemon) -> None:
    """Print where a daemon's threads are, and its log, for a test that failed with it running
    (pytest shows what a failed test printed): a hang then says where it waits."""
    if daemon.process.poll() is None:
        daemon.process.send_signal(signal.SIGUSR1)
        time.sleep(0.5)
    print(f"--- the daemon's log, last 30,000 characters:\n{daemon.log()[-30_000:]}")


def _wait_healthy(daemon: Daemon, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise AssertionError(f"daemon exited with {daemon.process.returncode}:\n{daemon.log()}")
        try:
            if httpx.get(f"{daemon.url}/v1/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"daemon not healthy after {timeout}s:\n{daemon.log()}")
