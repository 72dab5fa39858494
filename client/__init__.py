"""The specklab client: book devkits, compile and deploy models, stream events.

>>> from specklab.client import Client
>>> with Client() as lab:                      # SPECKLAB_URL, SPECKLAB_TOKEN
...     print(lab.devices())
"""

from specklab.schemas.stream import StreamMode

from ._async_client import AsyncBooking, AsyncClient, AsyncEventStream, AsyncHardwareModel
from ._client import Booking, Client, EventStream, HardwareModel
from ._errors import (
    ApiError,
    AuthenticationError,
    BookingConflict,
    ClientClosed,
    Conflict,
    DeviceBusy,
    DeviceError,
    DeviceOffline,
    InvalidRequest,
    ModelDoesNotFit,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ServerError,
    SpecklabError,
    SpecklabWarning,
    StreamError,
    Timeout,
    TransportError,
    WaitTimeout,
)
from ._events import (
    DvsEvent,
    Spike,
    as_events,
    raster_to_events,
    to_dvs_events,
    to_raster,
    to_spikes,
)
from ._remote import RemoteModel
from ._report import report_table
from ._stream import BatchOutput

__all__ = [
    "ApiError",
    "AsyncBooking",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncHardwareModel",
    "AuthenticationError",
    "BatchOutput",
    "Booking",
    "BookingConflict",
    "Client",
    "ClientClosed",
    "Conflict",
    "DeviceBusy",
    "DeviceError",
    "DeviceOffline",
    "DvsEvent",
    "EventStream",
    "HardwareModel",
    "InvalidRequest",
    "ModelDoesNotFit",
    "NotFound",
    "PermissionDenied",
    "ProtocolError",
    "RemoteModel",
    "ServerError",
    "SpecklabError",
    "SpecklabWarning",
    "Spike",
    "StreamError",
    "StreamMode",
    "Timeout",
    "TransportError",
    "WaitTimeout",
    "as_events",
    "raster_to_events",
    "report_table",
    "to_dvs_events",
    "to_raster",
    "to_spikes",
]
