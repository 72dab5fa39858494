"""scikit-learn's 8x8 digits, rate-coded to events, and a small network trained on them here.

Shared by the reference tests and ``benchmarks/bench_evaluate.py``. Training is full-batch,
seeded and takes a second or two; nothing is cached on disk.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.compile import CompileOptions
from specklab.server.compiler import ArchiveLimits
from specklab.server.compiler.pipeline import compile_upload
from specklab.server.datasets.formats import Samples
from tests.fixtures_models import torchscript_bytes

SEED = 0
#: A pixel of value v (0-16) sends v events, one per time step of STEP_US.
STEPS = 16
STEP_US = 1000
INPUT_SHAPE = (1, 8, 8)
OPTIONS = CompileOptions(input_shape=INPUT_SHAPE)


def images() -> tuple[np.ndarray, np.ndarray]:
    """Count images ``[n, 1, 8, 8]`` (values 0-16) and labels."""
    digits = load_digits()
    return digits.images.astype(np.float32)[:, None], digits.target.astype(np.int64)


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images and labels: a fixed, seeded split (a quarter for testing)."""
    x, y = images()
    order = np.random.default_rng(SEED).permutation(len(y))
    test, train = order[: len(y) // 4], order[len(y) // 4 :]
    return x[train], y[train], x[test], y[test]


def network() -> nn.Sequential:
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.AvgPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10, bias=False),
    )


def train(epochs: int = 60) -> nn.Sequential:
    """The network trained, full batch, on the training split."""
    # One thread: on a shared machine torch's thread pool spends its time waiting.
    torch.set_num_threads(1)
    x, y, _, _ = split()
    model = network()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model.eval()


def leaky(model: nn.Sequential) -> nn.Sequential:
    """A copy whose first layer leaks: every slow-clock tick then costs the simulator work,
    so samples take as long as their duration and the slow clock make them."""
    copy = network()
    copy.load_state_dict(model.state_dict())
    copy[0].bias = nn.Parameter(torch.full((copy[0].out_channels,), -0.01))
    return copy.eval()


def ann_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float(np.mean(predicted == y))


def upload_bytes(model: nn.Module) -> bytes:
    return torchscript_bytes(model, INPUT_SHAPE)


def compile_network(model: nn.Module) -> ChipConfig:
    """Compiled in this process (the daemon compiles in its sandboxed workers)."""
    result = compile_upload(upload_bytes(model), OPTIONS, ArchiveLimits())
    return ChipConfig.model_validate_json(result.config_json)


def rate_coded(x: np.ndarray) -> Samples:
    """Each image as events: pixel value v fires at steps 0..v-1 (p = 0), row by row."""
    events, offsets = [], [0]
    for image in x:
        counts = image[0].astype(np.int64)
        ys, xs = np.nonzero(counts)
        per_step = [
            (step * STEP_US, int(px), int(py))
            for step in range(STEPS)
            for py, px in zip(ys, xs, strict=True)
            if counts[py, px] > step
        ]
        sample = np.zeros(len(per_step), [("t", "<u8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
        if per_step:
            sample["t"], sample["x"], sample["y"] = np.array(per_step).T
        events.append(sample)
        offsets.append(offsets[-1] + len(sample))
    return Samples(np.concatenate(events), np.array(offsets, np.int64), np.zeros(0))


@dataclass(frozen=True)
class Digits:
    model: nn.Module
    config: ChipConfig
    samples: Samples
    ann_accuracy: float


def digits_job_inputs(limit: int | None = None) -> Digits:
    """The trained network, compiled, and its test split as a dataset (``limit`` samples)."""
    model = train()
    _, _, x, y = split()
    x, y = x[:limit], y[:limit]
    coded = rate_coded(x)
    samples = Samples(coded.events, coded.offsets, y)
    return Digits(model, compile_network(model), samples, ann_accuracy(model, x, y))


def npz_upload(samples: Samples) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, events=samples.events, offsets=samples.offsets, labels=samples.labels)
    return buffer.getvalue()
