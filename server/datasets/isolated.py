"""Parsing an uploaded dataset in a sandboxed child process, never in the daemon.

HDF5 (h5py's C library), zip and tar directories and AEDAT4 (dv-processing, native code that
aborts its process on some errors) are large parsers of untrusted bytes. The daemon starts
``python -P -m specklab.server.datasets.isolated SETUP`` with the upload as its stdin; the
child enters the compile workers' sandbox (``compiler/sandbox.py``: no network, no writes, no
other processes, the layers this kernel offers), limits its address space and CPU time, parses,
and writes the canonical ``.npz`` (no pickle) to its stdout. Exit status 2 with a message on
stderr is a dataset the layout refuses; any other end (a crash, a signal, a limit, the wall
clock) is reported as an unreadable file. The daemon then loads the canonical arrays with
``allow_pickle=False`` and checks them again (``formats.canonical_events``): it trusts nothing
the child says.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..compiler import sandbox
from .aedat_folder import extract_folder, read_recordings
from .formats import (
    DatasetError,
    Samples,
    canonical_events,
    detect_container,
    is_recordings_archive,
    read_arrays,
)

_GIB = 1024**3
#: Where a folder of recordings is unpacked for the sandboxed reader: outside /tmp, which the
#: sandbox replaces with an empty file system, and reachable by its uid.
SCRATCH_ROOT = "/var/tmp"
_REFUSED = 2


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_events: int
    #: What an archive's entries may unpack to in all.
    max_unpacked_bytes: int
    #: Address space of the parser (the upload and its arrays, a few times over).
    memory_bytes: int = 8 * _GIB
    cpu_seconds: int = 300
    timeout_seconds: float = 600.0


def read_isolated(path: Path, limits: ParseLimits) -> tuple[str, Samples]:
    """The upload's format and samples, parsed in the sandboxed child; DatasetError for a file
    that is not a dataset, or that the parser could not survive."""
    with path.open("rb") as upload:
        detect_container(upload.read(512))
    with tempfile.TemporaryDirectory(dir=SCRATCH_ROOT, prefix="specklab-dataset-") as scratch:
        if os.getuid() == 0:  # the sandboxed child runs as nobody: theirs alone to read
            os.chown(scratch, sandbox.SANDBOX_ID, sandbox.SANDBOX_ID)
        setup = {
            "limits": asdict(limits),
            "layers": sorted(sandbox.available_layers()),
            "scratch": scratch,
        }
        with path.open("rb") as upload:
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", __name__, json.dumps(setup)],
                stdin=upload,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=sandbox.worker_env(),
                close_fds=True,
            )
        try:
            output, errors = process.communicate(timeout=limits.timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise DatasetError(
                f"reading the file took longer than {limits.timeout_seconds:g} s"
            ) from None
    message = (errors.decode(errors="replace").strip().splitlines() or [""])[-1]
    if process.returncode == _REFUSED:
        raise DatasetError(message)
    if process.returncode != 0:
        raise DatasetError(f"the file cannot be read: its parser {_death(process.returncode)}")
    try:
        with np.load(io.BytesIO(output), allow_pickle=False) as arrays:
            events, offsets, labels = arrays["events"], arrays["offsets"], arrays["labels"]
            kind = str(arrays["format"])
    except (ValueError, OSError, KeyError) as exc:
        raise DatasetError(f"the file cannot be read: {exc}") from exc
    if kind not in ("npz", "hdf5", "aedat4"):
        raise DatasetError("the file cannot be read: its parser named no format")
    return kind, canonical_events(events, offsets, labels)


def _death(returncode: int) -> str:
    if returncode == -signal.SIGKILL or returncode == -signal.SIGXCPU:
        return "ran out of time or memory"
    if returncode < 0:
        return f"crashed ({signal.Signals(-returncode).name})"
    return f"failed (exit status {returncode})"


def main() -> int:
    setup = json.loads(sys.argv[1])
    limits = ParseLimits(**setup["limits"])
    layers = set(setup["layers"])
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    data = sys.stdin.buffer.read()
    try:
        if is_recordings_archive(data):
            listing = extract_folder(
                data, Path(setup["scratch"]), max_unpacked=limits.max_unpacked_bytes
            )
            # Landlock would hide the extracted files; every mount is still read-only.
            sandbox.enter(layers - {"landlock"})
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
            kind, samples = "aedat4", read_recordings(listing, max_events=limits.max_events)
        else:
            sandbox.enter(layers)
            kind, samples = read_arrays(data, max_events=limits.max_events)
    except DatasetError as exc:
        print(exc, file=sys.stderr)
        return _REFUSED
    buffer = io.BytesIO()
    np.savez(
        buffer,
        format=np.array(kind),
        events=samples.events,
        offsets=samples.offsets,
        labels=samples.labels,
    )
    sys.stdout.buffer.write(buffer.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
