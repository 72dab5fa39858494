r"""Device errors: :class:`~specklab.schemas.errors.DomainError`\ s whose class sets the stable
``code`` and the HTTP ``status``, passed on as is by the API and the stream layer.

::

    DeviceError
    ├── DeviceNotFound      no device has this id
    ├── DeviceOffline       the device is unplugged (or vanished while held)
    ├── DeviceBusy          another deployment holds the device
    ├── DeviceUnsupported   the device cannot take a network (e.g. a DAVIS camera)
    ├── DeviceTimeout       a call did not finish in time
    │   └── DeviceUnresponsive  ... and did not stop when asked: the device is restarted
    ├── DeviceIOError       talking to the device failed; the manager then treats it as gone
    ├── DeviceStateError    the call makes no sense now (no configuration applied, closed ...)
    ├── ConfigRejected      the device (samna's validator) refused the configuration
    ├── InvalidEvents       inputs a device cannot take: not an event array, too far ahead
    │                       of its stopwatch (their contents are checked before, once:
    │                       ``schemas/inputs.py``, wire code ``bad_input``)
    ├── InputQueueFull      too many continuous-mode inputs wait for their time
    ├── OutputTooLarge      one call's answer would hold more events than allowed
    └── InvalidArgument     any other argument out of range (e.g. a neuron that does not exist)
"""

from __future__ import annotations

from typing import Any

from specklab.schemas.errors import DomainError


class DeviceError(DomainError):
    code = "device_error"
    status = 500

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(self.status, self.code, message, detail)


class DeviceNotFound(DeviceError):
    code = "device_not_found"
    status = 404


class DeviceOffline(DeviceError):
    code = "device_offline"
    status = 409


class DeviceBusy(DeviceError):
    code = "device_busy"
    status = 409


class DeviceUnsupported(DeviceError):
    code = "device_unsupported"
    status = 422


class DeviceTimeout(DeviceError):
    code = "device_timeout"
    status = 504


class DeviceUnresponsive(DeviceTimeout):
    """A call overran its timeout and did not stop: its thread is stuck in it."""


class DeviceIOError(DeviceError):
    code = "device_io_error"
    status = 502


class DeviceStateError(DeviceError):
    code = "device_state"
    status = 409


class ConfigRejected(DeviceError):
    code = "config_rejected"
    status = 422


class InvalidEvents(DeviceError):
    code = "invalid_events"
    status = 422


class InputQueueFull(DeviceError):
    code = "input_queue_full"
    status = 429


class OutputTooLarge(DeviceError):
    code = "output_too_large"
    status = 422


class InvalidArgument(DeviceError):
    code = "invalid_argument"
    status = 422
