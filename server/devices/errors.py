"""Device errors. Each has a stable ``code`` that the API and the stream layer pass on as is,
and the HTTP status an API answer carries (``ApiError(e.http_status, e.code, e.message)``).

::

    DeviceError
    ├── DeviceNotFound      no device has this id
    ├── DeviceOffline       the device is unplugged (or vanished mid-session)
    ├── DeviceBusy          another session holds the device
    ├── DeviceUnsupported   the device cannot take a network (e.g. a DAVIS camera)
    ├── DeviceTimeout       a call did not finish in time
    │   └── DeviceUnresponsive  ... and did not stop when asked: the device is restarted
    ├── DeviceIOError       talking to the device failed; the manager then treats it as gone
    ├── DeviceStateError    the call makes no sense now (no configuration applied, closed ...)
    ├── ConfigRejected      the device (samna's validator) refused the configuration
    ├── InvalidEvents       input events that do not fit the applied configuration
    ├── InputQueueFull      too many continuous-mode inputs wait for their time
    ├── OutputTooLarge      one call's answer would hold more events than allowed
    └── InvalidArgument     any other argument out of range (e.g. a neuron that does not exist)
"""

from __future__ import annotations

from typing import Any


class DeviceError(Exception):
    code = "device_error"
    http_status = 500

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        #: Plain data for programs, as ``ErrorBody.detail`` (e.g. the ids an unknown one is near).
        self.detail = detail


class DeviceNotFound(DeviceError):
    code = "device_not_found"
    http_status = 404


class DeviceOffline(DeviceError):
    code = "device_offline"
    http_status = 409


class DeviceBusy(DeviceError):
    code = "device_busy"
    http_status = 409


class DeviceUnsupported(DeviceError):
    code = "device_unsupported"
    http_status = 422


class DeviceTimeout(DeviceError):
    code = "device_timeout"
    http_status = 504


class DeviceUnresponsive(DeviceTimeout):
    """A call overran its timeout and did not stop: its thread is stuck in it."""


class DeviceIOError(DeviceError):
    code = "device_io_error"
    http_status = 502


class DeviceStateError(DeviceError):
    code = "device_state"
    http_status = 409


class ConfigRejected(DeviceError):
    code = "config_rejected"
    http_status = 422


class InvalidEvents(DeviceError):
    code = "invalid_events"
    http_status = 422


class InputQueueFull(DeviceError):
    code = "input_queue_full"
    http_status = 429


class OutputTooLarge(DeviceError):
    code = "output_too_large"
    http_status = 422


class InvalidArgument(DeviceError):
    code = "invalid_argument"
    http_status = 422
