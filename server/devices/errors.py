"""Device errors. Each has a stable ``code`` that the API and the stream layer pass on as is.

::

    DeviceError
    ├── DeviceNotFound      no device has this id
    ├── DeviceOffline       the device is unplugged (or vanished mid-session)
    ├── DeviceBusy          another session holds the device
    ├── DeviceUnsupported   the device cannot take a network (e.g. a DAVIS camera)
    ├── DeviceTimeout       a call did not finish in time
    ├── DeviceIOError       talking to the device failed; the manager then treats it as gone
    ├── DeviceStateError    the call makes no sense now (no configuration applied, closed ...)
    ├── ConfigRejected      the device (samna's validator) refused the configuration
    ├── InvalidEvents       input events that do not fit the applied configuration
    ├── InvalidArgument     any other argument out of range (e.g. a neuron that does not exist)
    └── SamnaUnavailable    samna is missing, the PyPI stub, or failed to import
"""

from __future__ import annotations


class DeviceError(Exception):
    code = "device_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeviceNotFound(DeviceError):
    code = "device_not_found"


class DeviceOffline(DeviceError):
    code = "device_offline"


class DeviceBusy(DeviceError):
    code = "device_busy"


class DeviceUnsupported(DeviceError):
    code = "device_unsupported"


class DeviceTimeout(DeviceError):
    code = "device_timeout"


class DeviceIOError(DeviceError):
    code = "device_io_error"


class DeviceStateError(DeviceError):
    code = "device_state"


class ConfigRejected(DeviceError):
    code = "config_rejected"


class InvalidEvents(DeviceError):
    code = "invalid_events"


class SamnaUnavailable(DeviceError):
    code = "samna_unavailable"


class InvalidArgument(DeviceError):
    code = "invalid_argument"
