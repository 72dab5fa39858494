"""The one device interface, implemented by the virtual devkit and the samna driver.

Every method blocks. A device is not thread-safe: the :class:`~.manager.DeviceManager` runs all
calls of one device on that device's own thread and offers async wrappers with timeouts.

Events are numpy arrays of the schemas' dtypes. Input spikes address **cores** (``core`` set;
``layer`` is ignored); output spikes carry both ``core`` and the model ``layer`` (filled from the
applied configuration; spikes of the DVS layer have ``core = 13`` and ``layer = 255``).
Timestamps are microseconds of the device's stopwatch.

Two ways to run events:

- **batch** (:meth:`Device.forward`): the inputs are shifted to start at 0, run, and every
  output they cause is returned, with timestamps shifted back into the inputs' time base. The
  virtual devkit's answer is exact. On hardware the end is found by the stopwatch and a bounded
  quiet period (see ``docs/devices.md``); ``DeviceOutput.complete`` is False when the bound cut
  the collection short (e.g. a live sensor never goes quiet).
- **continuous** (:meth:`Device.write` / :meth:`Device.read`): inputs are queued and enter the
  chip when the stopwatch reaches their timestamp (at once when it is already past);
  :meth:`Device.read` returns whatever came out since the last read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from specklab.schemas.chipconfig import ChipConfig
from specklab.schemas.events import DVS_DTYPE, READOUT_DTYPE, SPIKE_DTYPE
from specklab.schemas.inputs import Checked


@dataclass(frozen=True, slots=True)
class DeviceDescription:
    """What a device is and where it sits; no I/O."""

    #: Unique in the lab (``naming.lab_id``).
    id: str
    #: specklab device type, a key of ``chips.DEVICE_TYPES`` (e.g. ``speck2fdevkit``).
    type: str
    #: The chip it carries (``speck2f``...), None for devices that cannot take a network.
    chip: str | None
    virtual: bool
    serial_number: str | None = None
    usb_bus: int | None = None
    usb_address: int | None = None
    logic_version: str | None = None
    host: str = ""
    #: The name on its host, the guide's ``TYPE:INDEX`` (the id when left empty).
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.id)

    @property
    def supported(self) -> bool:
        return self.chip is not None


def _empty(dtype: np.dtype) -> np.ndarray:
    return np.zeros(0, dtype=dtype)


@dataclass(frozen=True, slots=True)
class DeviceOutput:
    spikes: np.ndarray = field(default_factory=lambda: _empty(SPIKE_DTYPE))
    dvs: np.ndarray = field(default_factory=lambda: _empty(DVS_DTYPE))
    readout: np.ndarray = field(default_factory=lambda: _empty(READOUT_DTYPE))
    #: False when a hardware forward stopped at its time bound instead of a quiet period.
    complete: bool = True

    @property
    def count(self) -> int:
        return len(self.spikes) + len(self.dvs) + len(self.readout)


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    ok: bool
    detail: str
    counters: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Device(Protocol):
    @property
    def description(self) -> DeviceDescription: ...

    def open(self) -> None:
        """Acquire the device (USB handle, event graphs; or the simulator). Idempotent."""

    def close(self) -> None:
        """Release everything :meth:`open` acquired. Idempotent; never raises for a gone device."""

    def apply(self, config: ChipConfig) -> None:
        """Write a network; ConfigRejected (with the validator's message) or DeviceTimeout."""

    def clear(self) -> None:
        """Remove the network: an empty configuration, slow clock off, pending inputs dropped."""

    def reset_states(self) -> None:
        """Set every neuron back to the configuration's initial value."""

    def write(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        checked: Checked | None = None,
    ) -> None:
        """Queue input events (continuous mode), timed by the stopwatch (``checked`` as for
        :meth:`forward`)."""

    def forward(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        timeout: float,
        checked: Checked | None = None,
    ) -> DeviceOutput:
        """Run a batch and return every output it causes (see the module docstring).

        ``timeout`` bounds the wait for outputs after the last input is due, in seconds.
        ``checked``: the input check's proof for one of the arrays; a device that checks its
        inputs itself skips that for what the proof covers.
        """

    def read(self, timeout: float) -> DeviceOutput:
        """Outputs since the last read; waits up to ``timeout`` seconds for the first one."""

    def start_stopwatch(self) -> None: ...

    def stop_stopwatch(self) -> None: ...

    def reset_stopwatch(self) -> None:
        """Set the stopwatch to 0 (it keeps running if it was running)."""

    def set_sensor(self, enabled: bool) -> None:
        """Let the DVS sensor's events into the chip (as the configuration routes them) or not."""

    def read_states(self, core: int) -> np.ndarray:
        """The membrane states of a configured core's neurons, int32 ``[feature][y][x]``."""

    def health(self) -> DeviceHealth: ...


@runtime_checkable
class Interruptible(Protocol):
    """A device whose long calls can be stopped: the manager interrupts a call that overruns
    its timeout (devices without this get a new thread and driver instead)."""

    def interrupt(self) -> None:
        """Make the running call stop soon and raise; called from another thread."""


@runtime_checkable
class QuickForward(Protocol):
    """A device that answers some small batches on the caller's thread (the virtual devkit):
    the manager offers it each batch first, on the event loop, when the device's thread is
    idle; a batch it declines goes to the thread."""

    def forward_quick(
        self,
        spikes: np.ndarray | None = None,
        dvs: np.ndarray | None = None,
        *,
        checked: Checked | None = None,
    ) -> DeviceOutput | None:
        """:meth:`Device.forward` within a small bound of work, or None (declined, nothing
        changed): never more than a fraction of a millisecond, whatever the inputs."""
