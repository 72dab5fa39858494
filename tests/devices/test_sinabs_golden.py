"""Golden tests against the vendor library itself, where it is installed.

sinabs cannot be imported here without samna and samnagui, so the one pure function these tests
pin is taken from its installed source file by name and run on its own.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from specklab.server.devices.samna_events import neuron_address


def _sinabs_function(module: str, name: str) -> Callable[..., int]:
    spec = importlib.util.find_spec("sinabs")
    if spec is None or spec.origin is None:
        pytest.skip("sinabs is not installed (pip install --no-deps sinabs==3.1.3 to run this)")
    source = Path(spec.origin).parent / "backend" / "dynapcnn" / f"{module}.py"
    tree = ast.parse(source.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict[str, object] = {"math": math, "Tuple": tuple}
    exec(compile(ast.Module([node], type_ignores=[]), str(source), "exec"), namespace)
    return namespace[name]  # type: ignore[return-value]


@pytest.mark.parametrize("shape", [(3, 5, 6), (16, 32, 32), (8, 64, 16), (5, 3, 17), (2, 1, 9)])
def test_neuron_addresses_match_sinabs(shape: tuple[int, int, int]) -> None:
    reference = _sinabs_function("io", "calculate_neuron_address")
    features, height, width = shape
    for feature in range(features):
        for y in range(height):
            for x in range(width):
                assert neuron_address(shape, feature, y, x) == reference(x, y, feature, shape)
