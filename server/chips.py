"""Per-chip facts in one place: device types, core memories, layer limits, memory formulas.

Sources: the vendor's published figures and its Python tooling's constraint tables
(``docs/chip.md`` §1-3 and §8). Nothing else in specklab hard-codes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

KI: Final = 1024


@dataclass(frozen=True, slots=True)
class CoreMemory:
    kernel: int
    neuron: int
    bias: int = KI


@dataclass(frozen=True, slots=True)
class LayerLimits:
    max_input_size: int = 128
    max_output_size: int = 64
    max_channels: int = 1024
    max_kernel_size: int = 16
    strides: tuple[int, ...] = (1, 2, 4, 8)
    max_padding: int = 7
    poolings: tuple[int, ...] = (1, 2, 4)
    max_destinations: int = 2
    max_readout_classes: int = 15


@dataclass(frozen=True, slots=True)
class Chip:
    name: str
    cores: tuple[CoreMemory, ...]
    limits: LayerLimits = LayerLimits()
    dvs_size: tuple[int, int] = (128, 128)

    @property
    def num_cores(self) -> int:
        return len(self.cores)


_SPECK_CORES: Final = (
    *(CoreMemory(kernel=16 * KI, neuron=64 * KI) for _ in range(3)),
    *(CoreMemory(kernel=32 * KI, neuron=32 * KI) for _ in range(2)),
    *(CoreMemory(kernel=64 * KI, neuron=16 * KI) for _ in range(2)),
    *(CoreMemory(kernel=16 * KI, neuron=16 * KI) for _ in range(2)),
)

CHIPS: Final[dict[str, Chip]] = {
    "speck2e": Chip("speck2e", _SPECK_CORES),
    "speck2f": Chip("speck2f", _SPECK_CORES),
}

#: The vendor guide's ``device_types``: specklab device type -> samna ``device_type_name``.
DEVICE_TYPES: Final[dict[str, str]] = {
    "speck2e": "Speck2eTestBoard",
    "speck2edevkit": "Speck2eDevKit",
    "speck2fmodule": "Speck2fModuleDevKit",
    "speck2fdevkit": "Speck2fDevKit",
    "dynapse2": "DYNAP-SE2 DevBoard",
    "dynapse2_stack": "DYNAP-SE2 Stack",
    "davis346": "Davis 346",
    "davis240": "Davis 240",
    "dvxplorer": "DVXplorer",
}

#: Device types that can take a network, and the chip each carries.
SUPPORTED_DEVICES: Final[dict[str, str]] = {
    "speck2e": "speck2e",
    "speck2edevkit": "speck2e",
    "speck2fmodule": "speck2f",
    "speck2fdevkit": "speck2f",
}


def _pow2_bits(n: int) -> int:
    return math.ceil(math.log2(n)) if n > 1 else 0


def kernel_memory(c_in: int, c_out: int, kernel_size: int) -> int:
    """Kernel memory entries a layer needs (the vendor's formula, exactly)."""
    return c_in * 2 ** (_pow2_bits(kernel_size * kernel_size) + _pow2_bits(c_out))


def neuron_memory(c_out: int, height: int, width: int) -> int:
    """Neuron memory entries for the conv output (before pooling)."""
    return c_out * 2 ** (_pow2_bits(height) + _pow2_bits(width))


def bias_memory(c_out: int, has_bias: bool) -> int:
    return c_out if has_bias else 0
